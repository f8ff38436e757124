package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
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

// tokenLeeway is the default clock skew allowed on exp, nbf and iat
// (Config.JWTLeeway overrides it).
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
// or badly signed credentials are a 401 *Error; past
// limits.auth_failures_per_ip_per_second of those from one IP, a request
// that brings credentials is a 429 before they are checked.
func (s *Server) Authenticate(r *http.Request) (Identity, error) {
	tok, ok, err := credentials(r)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{Anonymous: true}, nil
	}
	ip, now := limitedIP(r.RemoteAddr), s.now()
	if err := s.limits.checkAuth(ip, now); err != nil {
		return Identity{}, err
	}
	id, err := s.Identify(tok)
	if err != nil && AsError(err).Code == http.StatusUnauthorized {
		s.limits.failed(ip, now)
	}
	return id, err
}

// Identify checks a bearer token given outside the HTTP request (the
// WebSocket auth and refresh ops): the API key is System, a valid user JWT
// is that user; anything else is a 401 *Error, and a banned user a 403.
func (s *Server) Identify(tok string) (Identity, error) {
	if s.cfg.APIKey != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.APIKey)) == 1 {
		return Identity{System: true}, nil
	}
	now := s.now()
	id, ok := s.tokens.get(tok, now)
	if !ok {
		var err error
		if id, err = s.verifier.identity(tok, s.now); err != nil {
			return Identity{}, err
		}
		s.tokens.put(tok, id, now)
	}
	if until := s.moderation.banned(id.User); !until.IsZero() {
		return Identity{}, newError(http.StatusForbidden, ErrForbidden, "user %q is banned until %s", id.User, until.Format(timeFormat))
	}
	return id, nil
}

// identity verifies a user token and reads its claims.
func (v *verifier) identity(tok string, now func() time.Time) (Identity, error) {
	if !v.enabled() {
		return Identity{}, unauthorizedf("the token is not the API key and user tokens are not enabled (no JWT secret or public key is configured)")
	}
	if strings.Count(tok, ".") != 2 {
		return Identity{}, unauthorizedf("the token is neither the API key nor a user token (JWT)")
	}
	c, err := v.verify(tok, now)
	if err != nil {
		return Identity{}, err
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

// verify checks a user token against the configured keys and the server
// clock and returns its claims. Every failure is a 401 *Error that says
// what is wrong without echoing the token.
//
// The rules, each against a known attack on JWT verifiers:
//   - The token's alg must be one Herald has a key for: HS256 with a JWT
//     secret, RS256 with an RSA key, ES256 with a P-256 key. "none" and
//     every other alg (HS512, RS384, PS256, ...) are refused.
//   - The key comes from the alg, never from the token: HS256 gets the
//     secret only, RS256 an RSA key only, ES256 a P-256 key only, so an
//     HS256 token "signed" with the bytes of the public key (algorithm
//     confusion, CVE-2015-9235 and kin) cannot verify. Header members that
//     carry or point to keys (jwk, jku, x5u, x5c) are ignored.
//   - kid picks among the RS256/ES256 keys: it must name a configured key
//     of the token's alg; without a kid, the alg must have exactly one
//     key. HS256 has one secret, which has no kid, so an HS256 token's kid
//     is not consulted (as before public keys existed).
//   - A crit header is refused (RFC 7515 §4.1.11: an extension Herald does
//     not understand, such as unencoded payloads, must fail).
//   - exp, nbf and iat are checked against the server clock with the
//     configured leeway; sub is required.
func (v *verifier) verify(tok string, now func() time.Time) (Claims, error) {
	if !v.enabled() {
		return Claims{}, unauthorizedf("user tokens are not enabled (no JWT secret or public key is configured)")
	}
	var c tokenClaims
	p := jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(now),
		jwt.WithIssuedAt(),
	)
	t, err := p.ParseWithClaims(tok, &c, v.keyFor)
	if err != nil {
		return Claims{}, v.tokenError(t, err)
	}
	if c.Subject == "" {
		return Claims{}, unauthorizedf("token has no sub claim")
	}
	return c.Claims, nil
}

// keyFor is the jwt.Keyfunc: the key that verifies t, chosen by its alg
// and kid.
func (v *verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !v.accepts(alg) { // WithValidMethods refuses it first; this is the backstop
		return nil, v.methodError(alg)
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, unauthorizedf("token header has crit extensions, which are not supported")
	}
	if alg == algHS256 {
		return v.secret, nil // the only HS256 key: never a public key
	}
	var kid string
	if raw, ok := t.Header["kid"]; ok && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return nil, unauthorizedf("token kid must be a string")
		}
		kid = s
	}
	if kid != "" {
		for _, k := range v.keys {
			if k.kid != kid {
				continue
			}
			if k.alg != alg {
				return nil, unauthorizedf("token key id %q names an %s key, which cannot verify %s", clip(kid), k.alg, alg)
			}
			return k.key, nil
		}
		// A single key without a kid (a PEM key) verifies every token of
		// its alg: identity providers set a kid whether or not it matters.
		if k, n := v.only(alg); n == 1 && k.kid == "" {
			return k.key, nil
		}
		return nil, unauthorizedf("token key id %q is unknown", clip(kid))
	}
	k, n := v.only(alg)
	if n != 1 {
		return nil, unauthorizedf("token has no kid and %d %s keys are configured", n, alg)
	}
	return k.key, nil
}

// only returns the last key of alg and how many there are.
func (v *verifier) only(alg string) (last publicKey, n int) {
	for _, k := range v.keys {
		if k.alg == alg {
			last, n = k, n+1
		}
	}
	return last, n
}

// methodError refuses a token algorithm.
func (v *verifier) methodError(alg string) *Error {
	return unauthorizedf("token signing method %s is not accepted (want %s)", alg, strings.Join(v.methods, " or "))
}

// tokenError turns a JWT library error into a 401 that says what is wrong.
// t is the token as far as it was parsed (nil when it was not).
func (v *verifier) tokenError(t *jwt.Token, err error) error {
	var e *Error
	switch {
	case errors.As(err, &e): // from keyFor or tokenClaims
		return e
	case errors.Is(err, jwt.ErrTokenMalformed):
		return malformedError(err)
	case t != nil && t.Method != nil && !v.accepts(t.Method.Alg()):
		// The library knows the alg ("none", "HS512", ...): it is safe to
		// name. An alg it does not know is not echoed (next case).
		return v.methodError(t.Method.Alg())
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return unauthorizedf("token signing method (alg) is missing or unknown (want %s)", strings.Join(v.methods, " or "))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthorizedf("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthorizedf("token is expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthorizedf("token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return unauthorizedf("token is not valid yet (iat is in the future)")
	}
	return unauthorizedf("token is invalid")
}

// malformedError names the part of a token that does not decode. The
// phrases are jwt/v5's; an unknown one still gives "token is malformed".
func malformedError(err error) *Error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "number of segments"):
		return unauthorizedf("token is malformed (want three dot-separated parts)")
	case strings.Contains(msg, "decode header"):
		return unauthorizedf("token is malformed (the header is not base64url-encoded JSON)")
	case strings.Contains(msg, "decode claim"):
		return unauthorizedf("token is malformed (the claims are not base64url-encoded JSON)")
	case strings.Contains(msg, "decode signature"):
		return unauthorizedf("token is malformed (the signature is not base64url-encoded)")
	}
	return unauthorizedf("token is malformed")
}

// clip bounds a token-supplied string quoted in a message: it comes from
// an unverified token and may be of any length.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// tokenClaims decodes a token's claims field by field, so a claim of the
// wrong type is a 401 that names it. (encoding/json on Claims would say
// only "malformed", and would also take "SUB" for sub.)
type tokenClaims struct{ Claims }

func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return unauthorizedf("token claims must be a JSON object")
	}
	const (
		str     = "a string"
		strs    = "a list of strings"
		seconds = "a number (seconds since 1970)"
	)
	for _, f := range []struct {
		name string
		dst  any
		want string
	}{
		{"iss", &c.Issuer, str},
		{"sub", &c.Subject, str},
		{"aud", &c.Audience, "a string or a list of strings"},
		{"exp", &c.ExpiresAt, seconds},
		{"nbf", &c.NotBefore, seconds},
		{"iat", &c.IssuedAt, seconds},
		{"jti", &c.ID, str},
		{"roles", &c.Roles, strs},
		{"attrs", &c.Attrs, "an object"},
		{"channels", &c.Channels, strs},
	} {
		raw, ok := m[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return unauthorizedf("token claim %q must be %s", f.name, f.want)
		}
	}
	return nil
}

// MintToken signs an HS256 user token. It is what `herald token` and the
// tests use; a backend can do the same with any JWT library.
func MintToken(secret string, c Claims) (string, error) {
	if secret == "" {
		return "", errors.New("mint token: empty secret")
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
