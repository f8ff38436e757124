package server

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity is who is asking: the backend (System), a user from a JWT, or
// nobody (Anonymous).
type Identity struct {
	// System is true for the API key: every action on every channel.
	System bool
	// Anonymous is true when the request carried no credentials.
	Anonymous bool
	// User is the token's sub.
	User  string
	Roles []string
	// Attrs are the token's attributes; a single string becomes a
	// one-element list.
	Attrs map[string][]string
	// Channels are channel patterns the token grants outright.
	Channels []string
	// Expires is the token's expiry (zero when none).
	Expires time.Time
}

// Claims are the JWT claims Herald reads.
type Claims struct {
	jwt.RegisteredClaims
	Roles    []string       `json:"roles,omitempty"`
	Attrs    map[string]any `json:"attrs,omitempty"`
	Channels []string       `json:"channels,omitempty"`
}

// tokenLeeway is the clock skew allowed on exp and nbf.
const tokenLeeway = 5 * time.Second

// credentials returns the bearer token of a request, from the
// Authorization header or the token query parameter (EventSource cannot
// set headers). ok is false when there is none.
func credentials(r *http.Request) (token string, ok bool, err error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, found := strings.Cut(h, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", false, unauthorizedf("the Authorization header must be \"Bearer <token>\"")
		}
		return strings.TrimSpace(tok), true, nil
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok, true, nil
	}
	return "", false, nil
}

// Authenticate returns the identity of a request: the API key is System, a
// valid user JWT is that user, no credentials is Anonymous. Bad, expired
// or badly signed credentials are a 401 *Error.
func (s *Server) Authenticate(r *http.Request) (Identity, error) {
	tok, ok, err := credentials(r)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{Anonymous: true}, nil
	}
	return s.identify(tok)
}

// identify checks a token: the API key or a user JWT.
func (s *Server) identify(tok string) (Identity, error) {
	if s.cfg.APIKey != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.APIKey)) == 1 {
		return Identity{System: true}, nil
	}
	if s.cfg.JWTSecret == "" {
		return Identity{}, unauthorizedf("the token is not the API key and user tokens are not enabled (no JWT secret is configured)")
	}
	var c Claims
	_, err := jwt.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		return []byte(s.cfg.JWTSecret), nil
	},
		jwt.WithValidMethods([]string{"HS256"}),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		if strings.Count(tok, ".") != 2 {
			return Identity{}, unauthorizedf("the token is neither the API key nor a user token (JWT)")
		}
		return Identity{}, tokenError(err)
	}
	if c.Subject == "" {
		return Identity{}, unauthorizedf("token has no sub claim")
	}
	id := Identity{User: c.Subject, Roles: c.Roles, Channels: c.Channels}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if len(c.Attrs) > 0 {
		id.Attrs = make(map[string][]string, len(c.Attrs))
		for k, v := range c.Attrs {
			switch v := v.(type) {
			case string:
				id.Attrs[k] = []string{v}
			case []any:
				for _, x := range v {
					str, ok := x.(string)
					if !ok {
						return Identity{}, unauthorizedf("token attribute %q must be a string or a list of strings", k)
					}
					id.Attrs[k] = append(id.Attrs[k], str)
				}
			default:
				return Identity{}, unauthorizedf("token attribute %q must be a string or a list of strings", k)
			}
		}
	}
	return id, nil
}

// tokenError turns a JWT library error into a 401 that says what is wrong.
func tokenError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthorizedf("token is expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthorizedf("token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthorizedf("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, jwt.ErrTokenInvalidClaims) && strings.Contains(err.Error(), "signing method"):
		return unauthorizedf("token signing method is not accepted (want HS256)")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthorizedf("token is malformed")
	}
	return unauthorizedf("token is invalid: %s", strings.TrimPrefix(fmt.Sprint(err), "token is invalid: "))
}

// MintToken signs an HS256 user token. It is what `herald token` and the
// tests use; a backend can do the same with any JWT library.
func MintToken(secret string, c Claims) (string, error) {
	if secret == "" {
		return "", errors.New("mint token: empty secret")
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
