package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenT0 is the fake clock of the token tests: whole seconds, as JWT
// times are.
var tokenT0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func tokenClock() time.Time { return tokenT0 }

// identityServer is a Server with what identify reads: the defaulted
// config and the verifier New builds from it. It needs no store, so a test
// can have many and a fuzz worker starts fast; TestUserTokensThroughNew
// covers the wiring in New.
func identityServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = tokenClock
	}
	cfg = cfg.withDefaults()
	v, err := newVerifier(cfg)
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	s := &Server{cfg: cfg, verifier: v}
	s.moderation = &Moderation{srv: s} // no bans
	return s
}

// claimsAt returns valid claims for sub at the fake clock, with mods
// applied (a nil value deletes the claim).
func claimsAt(sub string, kv ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "iat": tokenT0.Unix(), "exp": tokenT0.Add(time.Hour).Unix()}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

// signed signs claims with method and key, with kid in the header when
// it is not empty.
func signed(t testing.TB, method jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// handmade builds a token from raw header and claims JSON, signed with
// HMAC-SHA256 under secret, or with an empty signature when secret is nil.
func handmade(header, claims string, secret []byte) string {
	in := b64url.EncodeToString([]byte(header)) + "." + b64url.EncodeToString([]byte(claims))
	if secret == nil {
		return in + "."
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + b64url.EncodeToString(m.Sum(nil))
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// wantUnauthorized checks that err is a 401 *Error whose message says
// want and does not echo the token.
func wantUnauthorized(t testing.TB, err error, tok, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Code != http.StatusUnauthorized || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("code %d (%v), want 401: %s", e.Code, e.Unwrap(), e.Message)
	}
	if !strings.Contains(e.Message, want) {
		t.Fatalf("message %q does not say %q", e.Message, want)
	}
	if len(tok) >= 16 && strings.Contains(e.Message, tok) {
		t.Fatalf("message echoes the token: %q", e.Message)
	}
	for _, part := range strings.Split(tok, ".") {
		if len(part) >= 16 && strings.Contains(e.Message, part) {
			t.Fatalf("message echoes a part of the token: %q", e.Message)
		}
	}
}

func TestUserTokenVerification(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	rsaPEM := pkixPEM(t, &k.rsaA.PublicKey)
	rsaPKCS1 := pkcs1PEM(&k.rsaA.PublicKey)
	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsaA.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*Server{
		"hs": identityServer(t, Config{JWTSecret: testSecret}),
		"rsaPEM": identityServer(t, Config{
			JWTPublicKeyFile: writeTemp(t, "rsa.pem", rsaPEM)}),
		"rsaPKCS1": identityServer(t, Config{
			JWTPublicKeyFile: writeTemp(t, "rsa1.pem", rsaPKCS1)}),
		"hs+rsaPEM": identityServer(t, Config{JWTSecret: testSecret,
			JWTPublicKeyFile: writeTemp(t, "rsa.pem", rsaPEM)}),
		"ecPEM": identityServer(t, Config{
			JWTPublicKeyFile: writeTemp(t, "ec.pem", pkixPEM(t, &k.ecA.PublicKey))}),
		"jwks": identityServer(t, Config{JWKSFile: jwksFile(t,
			jwkOf(&k.rsaA.PublicKey, "ra"), jwkOf(&k.rsaB.PublicKey, "rb"),
			jwkOf(&k.ecA.PublicKey, "ea"), jwkOf(&k.ecB.PublicKey, "eb"))}),
		"jwksNoKids": identityServer(t, Config{JWKSFile: jwksFile(t,
			jwkOf(&k.rsaB.PublicKey, ""), jwkOf(&k.ecB.PublicKey, ""))}),
	}
	valid := claimsAt("17")
	hs := signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", valid)
	rsA := signed(t, jwt.SigningMethodRS256, k.rsaA, "", valid)
	noneHeader := `{"alg":"none","typ":"JWT"}`
	claimsJSON := mustMarshal(valid)
	// Algorithm confusion: an HS256 token whose HMAC secret is what the
	// server holds as its RSA public key (the PEM file's bytes, or its DER).
	confused := func(secret []byte, kid string) string {
		return signed(t, jwt.SigningMethodHS256, secret, kid, valid)
	}

	cases := []struct {
		name, server, tok string
		want              string // "" for valid as user 17, else the message
	}{
		// Valid tokens.
		{"HS256", "hs", hs, ""},
		{"HS256 with a secret and an RSA key", "hs+rsaPEM", hs, ""},
		{"HS256 with a kid (not consulted)", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "anything", valid), ""},
		{"RS256 from PKIX PEM", "rsaPEM", rsA, ""},
		{"RS256 from PKCS1 PEM", "rsaPKCS1", rsA, ""},
		{"RS256 next to a secret", "hs+rsaPEM", rsA, ""},
		{"ES256 from PEM", "ecPEM", signed(t, jwt.SigningMethodES256, k.ecA, "", valid), ""},
		{"RS256 from JWKS by kid", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaB, "rb", valid), ""},
		{"RS256 from JWKS, other kid", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, "ra", valid), ""},
		{"ES256 from JWKS by kid", "jwks", signed(t, jwt.SigningMethodES256, k.ecB, "eb", valid), ""},
		{"RS256 from JWKS without kid, one RSA key", "jwksNoKids", signed(t, jwt.SigningMethodRS256, k.rsaB, "", valid), ""},
		{"ES256 from JWKS without kid, one EC key", "jwksNoKids", signed(t, jwt.SigningMethodES256, k.ecB, "", valid), ""},

		// Key selection.
		{"kid of another key of the same kind", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, "rb", valid), "token signature is invalid"},
		{"unknown kid", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, "nope", valid), `token key id "nope" is unknown`},
		{"kid on the one kid-less PEM key", "rsaPEM", signed(t, jwt.SigningMethodRS256, k.rsaA, "ra", valid), ""},
		{"kid on a PEM key, wrong signer", "rsaPEM", signed(t, jwt.SigningMethodRS256, k.rsaB, "rb", valid), "token signature is invalid"},
		{"kid of an EC key on RS256", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, "ea", valid), `token key id "ea" names an ES256 key, which cannot verify RS256`},
		{"kid of an RSA key on ES256", "jwks", signed(t, jwt.SigningMethodES256, k.ecA, "ra", valid), `token key id "ra" names an RS256 key, which cannot verify ES256`},
		{"no kid, several keys", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, "", valid), "token has no kid and 2 RS256 keys are configured"},
		{"kid not a string", "jwks", handmade(`{"alg":"RS256","kid":7}`, claimsJSON, nil) + "c2ln", "token kid must be a string"},
		{"long kid is clipped", "jwks", signed(t, jwt.SigningMethodRS256, k.rsaA, strings.Repeat("k", 500), valid), `token key id "` + strings.Repeat("k", 64) + `…" is unknown`},
		{"wrong key, no kid", "rsaPEM", signed(t, jwt.SigningMethodRS256, k.rsaB, "", valid), "token signature is invalid"},
		{"wrong EC key", "ecPEM", signed(t, jwt.SigningMethodES256, k.ecB, "", valid), "token signature is invalid"},

		// Algorithms.
		{"alg none", "hs", handmade(noneHeader, claimsJSON, nil), "token signing method none is not accepted (want HS256)"},
		{"alg none, RSA server", "rsaPEM", handmade(noneHeader, claimsJSON, nil), "token signing method none is not accepted (want RS256)"},
		{"alg none, every kind", "jwks", handmade(noneHeader, claimsJSON, nil), "token signing method none is not accepted (want RS256 or ES256)"},
		{"alg none with a signature", "hs+rsaPEM", handmade(noneHeader, claimsJSON, nil) + "c2ln", "token signing method none is not accepted (want HS256 or RS256)"},
		{"algorithm confusion, no secret", "rsaPEM", confused(rsaPEM, ""), "token signing method HS256 is not accepted (want RS256)"},
		{"algorithm confusion, PKCS1 bytes", "rsaPKCS1", confused(rsaPKCS1, ""), "token signing method HS256 is not accepted"},
		{"algorithm confusion, DER bytes", "rsaPEM", confused(rsaDER, ""), "token signing method HS256 is not accepted"},
		{"algorithm confusion, kid of the RSA key", "jwks", confused(rsaPEM, "ra"), "token signing method HS256 is not accepted"},
		{"algorithm confusion, secret configured", "hs+rsaPEM", confused(rsaPEM, ""), "token signature is invalid"},
		{"algorithm confusion, secret configured, DER", "hs+rsaPEM", confused(rsaDER, ""), "token signature is invalid"},
		{"HS512", "hs", signed(t, jwt.SigningMethodHS512, []byte(testSecret), "", valid), "token signing method HS512 is not accepted (want HS256)"},
		{"HS384", "hs+rsaPEM", signed(t, jwt.SigningMethodHS384, []byte(testSecret), "", valid), "token signing method HS384 is not accepted (want HS256 or RS256)"},
		{"RS384", "rsaPEM", signed(t, jwt.SigningMethodRS384, k.rsaA, "", valid), "token signing method RS384 is not accepted (want RS256)"},
		{"RS512 by kid", "jwks", signed(t, jwt.SigningMethodRS512, k.rsaA, "ra", valid), "token signing method RS512 is not accepted"},
		{"PS256", "rsaPEM", signed(t, jwt.SigningMethodPS256, k.rsaA, "", valid), "token signing method PS256 is not accepted"},
		{"RS256 on an HS256 server", "hs", rsA, "token signing method RS256 is not accepted (want HS256)"},
		{"ES256 on an RSA server", "rsaPEM", signed(t, jwt.SigningMethodES256, k.ecA, "", valid), "token signing method ES256 is not accepted (want RS256)"},
		{"unknown alg", "hs", handmade(`{"alg":"XS999"}`, claimsJSON, []byte(testSecret)), "token signing method (alg) is missing or unknown (want HS256)"},
		{"no alg", "hs", handmade(`{"typ":"JWT"}`, claimsJSON, []byte(testSecret)), "token signing method (alg) is missing or unknown"},
		{"alg not a string", "hs", handmade(`{"alg":256}`, claimsJSON, []byte(testSecret)), "token signing method (alg) is missing or unknown"},
		{"crit header", "hs", handmade(`{"alg":"HS256","crit":["b64"],"b64":false}`, claimsJSON, []byte(testSecret)), "token header has crit extensions"},

		// Malformed.
		{"three garbage parts", "hs", "a.b.c", "token is malformed"},
		{"header not base64", "hs", "!!!." + b64url.EncodeToString([]byte(claimsJSON)) + ".c2ln", "token is malformed (the header is not base64url-encoded JSON)"},
		{"header not JSON", "hs", handmade(`alg=HS256`, claimsJSON, []byte(testSecret)), "token is malformed (the header is not base64url-encoded JSON)"},
		{"claims not base64", "hs", b64url.EncodeToString([]byte(`{"alg":"HS256"}`)) + ".***.c2ln", "token is malformed (the claims are not base64url-encoded JSON)"},
		{"claims not JSON", "hs", handmade(`{"alg":"HS256"}`, `sub=17`, []byte(testSecret)), "token is malformed (the claims are not base64url-encoded JSON)"},
		{"claims a JSON list", "hs", handmade(`{"alg":"HS256"}`, `["17"]`, []byte(testSecret)), "token claims must be a JSON object"},
		{"claims null", "hs", handmade(`{"alg":"HS256"}`, `null`, []byte(testSecret)), "token has no sub claim"},
		{"signature not base64", "hs", strings.Join(strings.Split(hs, ".")[:2], ".") + ".*sig*", "token is malformed (the signature is not base64url-encoded)"},
		{"truncated signature", "hs", hs[:len(hs)-4], "token signature is invalid"},
		{"truncated RS256", "rsaPEM", rsA[:len(rsA)-8], "token signature is invalid"},
		{"empty signature", "hs", strings.Join(strings.Split(hs, ".")[:2], ".") + ".", "token signature is invalid"},
		{"tampered claims", "hs", strings.Split(hs, ".")[0] + "." + b64url.EncodeToString([]byte(mustMarshal(claimsAt("18")))) + "." + strings.Split(hs, ".")[2], "token signature is invalid"},
		{"signed with another secret", "hs", signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123"), "", valid), "token signature is invalid"},
		{"two parts", "hs", "abc.def", "the token is neither the API key nor a user token (JWT)"},
		{"four parts", "hs", hs + ".x", "the token is neither the API key nor a user token (JWT)"},
		{"no dots", "hs", "nope", "the token is neither the API key nor a user token (JWT)"},

		// Claims.
		{"no sub", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("")), "token has no sub claim"},
		{"sub missing", "rsaPEM", signed(t, jwt.SigningMethodRS256, k.rsaA, "", claimsAt("", "sub", nil)), "token has no sub claim"},
		{"sub a number", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("", "sub", 17)), `token claim "sub" must be a string`},
		{"roles a string", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "roles", "admin")), `token claim "roles" must be a list of strings`},
		{"roles with a number", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "roles", []any{"a", 1})), `token claim "roles" must be a list of strings`},
		{"channels a string", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "channels", "a_*")), `token claim "channels" must be a list of strings`},
		{"exp a string", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "exp", "tomorrow")), `token claim "exp" must be a number (seconds since 1970)`},
		{"aud a number", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "aud", 3)), `token claim "aud" must be a string or a list of strings`},
		{"attrs a list", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "attrs", []any{"team"})), `token claim "attrs" must be an object`},
		{"attr a number", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "attrs", map[string]any{"team": 3})), `token attribute "team" must be a string or a list of strings`},
		{"attr a list with a number", "rsaPEM", signed(t, jwt.SigningMethodRS256, k.rsaA, "", claimsAt("17", "attrs", map[string]any{"team": []any{"3", 4}})), `token attribute "team" must be a string or a list of strings`},
		{"attr an object", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "attrs", map[string]any{"team": map[string]any{"id": "3"}})), `token attribute "team" must be a string or a list of strings`},
		{"attr null", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", "attrs", map[string]any{"team": nil})), `token attribute "team" must be a string or a list of strings`},
		{"wrong-case sub is not sub", "hs", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("", "sub", nil, "SUB", "17")), "token has no sub claim"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := servers[tc.server]
			if srv == nil {
				t.Fatalf("no server %q", tc.server)
			}
			id, err := srv.Identify(tc.tok)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("identify: %v", err)
				}
				if id.User != "17" || id.System || id.Anonymous || !id.Expires.Equal(tokenT0.Add(time.Hour)) {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v; want 401 %q", id, tc.want)
			}
			wantUnauthorized(t, err, tc.tok, tc.want)
			if id.User != "" || id.System {
				t.Fatalf("a refused token still gave identity %+v", id)
			}
		})
	}
}

func TestUserTokenClaimsBecomeTheIdentity(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	srv := identityServer(t, Config{JWTSecret: testSecret, JWKSFile: jwksFile(t, jwkOf(&k.ecA.PublicKey, "ea"))})
	c := claimsAt("u-1",
		"roles", []string{"admin", "editor"},
		"attrs", map[string]any{"team": "3", "groups": []string{"a", "b"}, "none": []string{}},
		"channels", []string{"user_u-1_*", "chat_room_{room_id}"},
	)
	for _, tok := range []string{
		signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", c),
		signed(t, jwt.SigningMethodES256, k.ecA, "ea", c),
	} {
		id, err := srv.Identify(tok)
		if err != nil {
			t.Fatalf("identify: %v", err)
		}
		if id.User != "u-1" || !slices.Equal(id.Roles, []string{"admin", "editor"}) ||
			!slices.Equal(id.Channels, []string{"user_u-1_*", "chat_room_{room_id}"}) ||
			!slices.Equal(id.Attrs["team"], []string{"3"}) || !slices.Equal(id.Attrs["groups"], []string{"a", "b"}) ||
			len(id.Attrs["none"]) != 0 || !id.Expires.Equal(tokenT0.Add(time.Hour)) {
			t.Fatalf("identity %+v", id)
		}
	}
}

func TestUserTokenTimesUseTheServerClockAndLeeway(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	defaultLeeway := identityServer(t, Config{JWTSecret: testSecret})
	wide := identityServer(t, Config{JWTLeeway: 30 * time.Second,
		JWTPublicKeyFile: writeTemp(t, "rsa.pem", pkixPEM(t, &k.rsaA.PublicKey))})
	at := func(d time.Duration) int64 { return tokenT0.Add(d).Unix() }
	hs := func(kv ...any) string {
		return signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17", kv...))
	}
	rs := func(kv ...any) string { return signed(t, jwt.SigningMethodRS256, k.rsaA, "", claimsAt("17", kv...)) }
	cases := []struct {
		name string
		srv  *Server
		tok  string
		want string // "" for valid
	}{
		{"no exp", defaultLeeway, hs("exp", nil), ""},
		{"exp just inside the leeway", defaultLeeway, hs("exp", at(-4*time.Second)), ""},
		{"exp at the leeway", defaultLeeway, hs("exp", at(-5*time.Second)), "token is expired"},
		{"exp just outside the leeway", defaultLeeway, hs("exp", at(-6*time.Second)), "token is expired"},
		{"exp long ago", defaultLeeway, hs("exp", at(-24*time.Hour)), "token is expired"},
		{"nbf just inside the leeway", defaultLeeway, hs("nbf", at(5*time.Second)), ""},
		{"nbf just outside the leeway", defaultLeeway, hs("nbf", at(6*time.Second)), "token is not valid yet (nbf)"},
		{"iat just inside the leeway", defaultLeeway, hs("iat", at(5*time.Second)), ""},
		{"iat just outside the leeway", defaultLeeway, hs("iat", at(6*time.Second)), "token is not valid yet (iat is in the future)"},
		{"expired and badly signed", defaultLeeway, signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef0123"), "", claimsAt("17", "exp", at(-time.Hour))), "token signature is invalid"},
		{"wide: exp just inside", wide, rs("exp", at(-29*time.Second)), ""},
		{"wide: exp just outside", wide, rs("exp", at(-30*time.Second)), "token is expired"},
		{"wide: nbf just inside", wide, rs("nbf", at(30*time.Second)), ""},
		{"wide: nbf just outside", wide, rs("nbf", at(31*time.Second)), "token is not valid yet (nbf)"},
		{"wide: iat just outside", wide, rs("iat", at(31*time.Second)), "token is not valid yet (iat is in the future)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := tc.srv.Identify(tc.tok)
			if tc.want == "" {
				if err != nil || id.User != "17" {
					t.Fatalf("identify: %+v, %v", id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			wantUnauthorized(t, err, tc.tok, tc.want)
		})
	}
}

func TestUserTokensDisabledWithoutKeys(t *testing.T) {
	t.Parallel()
	srv := identityServer(t, Config{APIKey: testAPIKey})
	id, err := srv.Identify(testAPIKey)
	if err != nil || !id.System {
		t.Fatalf("API key: %+v, %v", id, err)
	}
	tok := signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17"))
	_, err = srv.Identify(tok)
	wantUnauthorized(t, err, tok, "the token is not the API key and user tokens are not enabled")
	if _, err := srv.verifier.verify(tok, srv.now); err == nil {
		t.Fatal("verify accepted a token with no keys configured")
	}
}

func TestUserTokensThroughNew(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	srv, _ := newTestServer(t, Config{Now: tokenClock,
		JWKSFile: jwksFile(t, jwkOf(&k.rsaA.PublicKey, "ra"), jwkOf(&k.ecA.PublicKey, "ea"))})
	for _, tc := range []struct{ name, tok, want string }{
		{"RS256", signed(t, jwt.SigningMethodRS256, k.rsaA, "ra", claimsAt("17")), ""},
		{"ES256", signed(t, jwt.SigningMethodES256, k.ecA, "ea", claimsAt("17")), ""},
		{"HS256", signed(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt("17")), ""},
		{"expired", signed(t, jwt.SigningMethodRS256, k.rsaA, "ra", claimsAt("17", "exp", tokenT0.Add(-time.Hour).Unix())), "token is expired"},
	} {
		r := httptest.NewRequest("GET", "/sse?channel=a", nil)
		r.Header.Set("Authorization", "Bearer "+tc.tok)
		id, err := srv.Authenticate(r)
		if tc.want == "" {
			if err != nil || id.User != "17" {
				t.Errorf("%s: %+v, %v", tc.name, id, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		wantUnauthorized(t, err, tc.tok, tc.want)
	}
}

// fuzzRSAPublicKeyPEM verifies the RS256 seed of FuzzIdentify. Its private
// key signed that seed and was then thrown away.
const fuzzRSAPublicKeyPEM = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA5NR8XfHiGWKaPTOjU76I
5Jkhez2wqVrNmECzpC0yqH6HReeraFQvogTGpE0MkqyVitqgFbFwmFxeRiEs7udF
jSQLS6Wmr2NWdoZHmslQOUU9DEyNNaPKTTaLb6cuCFqwE99WEY+8IyMcCOK1hLRP
XR5lcfd6FSI4ChDlxi30W/G3JETzoy2/etzsHpW28d7mD6cI52hjhyK+yIp1+0OZ
ll+tCOy6a6XMH3howli3eVMkQbO+58BXCSeTk29F+WU+JMkUxdI6zZ6xMcEI2Xbo
5QbDNCMcV4zDanY58D5ZqSJd+RwAWXEkaO1b+k3TuqfFMSDoCPYN7kkHTNu0OkLB
XQIDAQAB
-----END PUBLIC KEY-----
`

// fuzzIdentityServer is the FuzzIdentify server: an API key, a secret
// and an RSA key, on the fake clock the seeds were minted for.
func fuzzIdentityServer(t testing.TB) *Server {
	return identityServer(t, Config{APIKey: testAPIKey, JWTSecret: testSecret,
		JWTPublicKeyFile: writeTemp(t, "fuzz_rsa.pem", []byte(fuzzRSAPublicKeyPEM))})
}

// readFuzzSeed reads a string seed of the FuzzIdentify corpus.
func readFuzzSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzIdentify", name))
	if err != nil {
		t.Fatal(err)
	}
	header, value, ok := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if !ok || header != "go test fuzz v1" || !strings.HasPrefix(value, "string(") || !strings.HasSuffix(value, ")") {
		t.Fatalf("%s is not a go test fuzz v1 string seed", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(value, "string("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// TestFuzzIdentifySeedsAreRealTokens keeps the checked-in seeds
// meaningful: the valid ones verify, the others fail for their reason.
func TestFuzzIdentifySeedsAreRealTokens(t *testing.T) {
	t.Parallel()
	srv := fuzzIdentityServer(t)
	for _, tc := range []struct{ seed, want string }{
		{"hs256_valid", ""},
		{"rs256_valid", ""},
		{"alg_none", "token signing method none is not accepted"},
		{"alg_confusion", "token signature is invalid"},
		{"hs256_truncated", "token signature is invalid"},
		{"rs256_truncated", "token signature is invalid"},
		{"rs256_kid_unknown", "token signature is invalid"}, // the one kid-less key is tried; it did not sign this
		{"claims_wrong_types", "token claim"},
	} {
		tok := readFuzzSeed(t, tc.seed)
		id, err := srv.Identify(tok)
		if tc.want == "" {
			if err != nil || id.User != "fuzz-user" {
				t.Errorf("%s: %+v, %v", tc.seed, id, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", tc.seed)
			continue
		}
		wantUnauthorized(t, err, tok, tc.want)
	}
}

// FuzzIdentify feeds arbitrary credentials to identify: it must never
// panic, and must answer either an identity (a user with a sub, or the
// API key) or a 401 *Error.
func FuzzIdentify(f *testing.F) {
	srv := fuzzIdentityServer(f)
	for _, s := range []string{"", ".", "..", "a.b.c", "e30.e30.", testAPIKey, "Bearer x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := srv.Identify(tok)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != http.StatusUnauthorized || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v (%T) is not a 401 *Error", err, err)
			}
			if id.User != "" || id.System || id.Anonymous {
				t.Fatalf("error %q with identity %+v", e.Message, id)
			}
			if len(tok) >= 16 && strings.Contains(e.Message, tok) {
				t.Fatalf("message echoes the token: %q", e.Message)
			}
			return
		}
		switch {
		case id.System:
			if tok != testAPIKey {
				t.Fatalf("system identity for a token that is not the API key")
			}
		case id.User == "":
			t.Fatalf("identity without a user: %+v", id)
		}
	})
}

func TestCachedTokensStillExpireAndBansStillApply(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now})
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "17", ExpiresAt: jwt.NewNumericDate(clk.Now().Add(time.Minute))}}
	tok, err := MintToken(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second one comes from the cache
		if id, err := srv.Identify(tok); err != nil || id.User != "17" {
			t.Fatalf("identify #%d: %+v %v", i, id, err)
		}
	}
	if _, err := srv.Moderation().Ban(context.Background(), "17", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Identify(tok); AsError(err).Code != 403 {
		t.Fatalf("a cached token of a banned user: %v", err)
	}
	clk.Advance(2 * time.Minute)
	if _, err := srv.Identify(tok); AsError(err).Code != 401 || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a cached token past its expiry: %v", err)
	}
}
