package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenKeys are the key pairs the token tests sign with, generated once
// per test binary (RSA generation is slow under -race).
type tokenKeys struct {
	rsaA, rsaB *rsa.PrivateKey
	ecA, ecB   *ecdsa.PrivateKey
	rsa1024    *rsa.PrivateKey
	ecP384     *ecdsa.PrivateKey
}

var testTokenKeys = sync.OnceValue(func() tokenKeys {
	rsaKey := func(bits int) *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(err)
		}
		return k
	}
	ecKey := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	return tokenKeys{
		rsaA: rsaKey(2048), rsaB: rsaKey(2048), rsa1024: rsaKey(1024),
		ecA: ecKey(elliptic.P256()), ecB: ecKey(elliptic.P256()), ecP384: ecKey(elliptic.P384()),
	}
})

// writeTemp writes data to a new file in a test directory.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pkixPEM encodes a public key as a "PUBLIC KEY" PEM block.
func pkixPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// pkcs1PEM encodes an RSA public key as an "RSA PUBLIC KEY" PEM block.
func pkcs1PEM(pub *rsa.PublicKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
}

var b64url = base64.RawURLEncoding

// jwkOf returns the public JWK of an RSA or ECDSA key.
func jwkOf(pub any, kid string) map[string]any {
	m := map[string]any{}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = b64url.EncodeToString(k.N.Bytes())
		m["e"] = b64url.EncodeToString(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		b, err := k.Bytes() // 0x04 || x || y, each full size
		if err != nil {
			panic(err)
		}
		size := (len(b) - 1) / 2
		m["kty"] = "EC"
		m["crv"] = k.Curve.Params().Name
		m["x"] = b64url.EncodeToString(b[1 : 1+size])
		m["y"] = b64url.EncodeToString(b[1+size:])
	default:
		panic("jwkOf: unsupported key")
	}
	if kid != "" {
		m["kid"] = kid
	}
	return m
}

// with returns a copy of a JWK with members set (nil deletes).
func with(jwk map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(jwk))
	for k, v := range jwk {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// jwksFile writes a JWK set to a file.
func jwksFile(t testing.TB, keys ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "jwks.json", b)
}

func TestKeyConfigLoadsEveryKeyKind(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	cases := []struct {
		name    string
		cfg     func(t *testing.T) Config
		methods []string
		keys    int
		leeway  time.Duration
	}{
		{"nothing", func(*testing.T) Config { return Config{} }, nil, 0, 5 * time.Second},
		{"secret", func(*testing.T) Config { return Config{JWTSecret: testSecret} }, []string{"HS256"}, 0, 5 * time.Second},
		{"PKIX RSA", func(t *testing.T) Config {
			return Config{JWTPublicKeyFile: writeTemp(t, "k.pem", pkixPEM(t, &k.rsaA.PublicKey))}
		}, []string{"RS256"}, 1, 5 * time.Second},
		{"PKCS1 RSA", func(t *testing.T) Config {
			return Config{JWTPublicKeyFile: writeTemp(t, "k.pem", pkcs1PEM(&k.rsaA.PublicKey))}
		}, []string{"RS256"}, 1, 5 * time.Second},
		{"PKIX P-256 with a secret and a leeway", func(t *testing.T) Config {
			return Config{JWTSecret: testSecret, JWTLeeway: time.Minute,
				JWTPublicKeyFile: writeTemp(t, "k.pem", pkixPEM(t, &k.ecA.PublicKey))}
		}, []string{"HS256", "ES256"}, 1, time.Minute},
		{"JWKS of both kinds, encryption keys skipped", func(t *testing.T) Config {
			return Config{JWKSFile: jwksFile(t,
				with(jwkOf(&k.rsaA.PublicKey, "ra"), "use", "sig", "alg", "RS256"),
				jwkOf(&k.ecA.PublicKey, "ea"),
				// An encryption key, even of a kind Herald does not know,
				// and with a kid already used: not for tokens.
				map[string]any{"kty": "oct-enc", "use": "enc", "kid": "ra"},
				with(jwkOf(&k.rsaB.PublicKey, "rb-enc"), "use", "enc", "alg", "RSA-OAEP"),
			)}
		}, []string{"RS256", "ES256"}, 2, 5 * time.Second},
		{"JWKS with padded base64 and extra members", func(t *testing.T) Config {
			j := jwkOf(&k.rsaA.PublicKey, "ra")
			j["n"] = j["n"].(string) + strings.Repeat("=", (4-len(j["n"].(string))%4)%4)
			j["x5t"] = "ignored"
			j["key_ops"] = []string{"verify"}
			return Config{JWKSFile: jwksFile(t, j)}
		}, []string{"RS256"}, 1, 5 * time.Second},
		{"PEM plus JWKS with kids", func(t *testing.T) Config {
			return Config{JWTSecret: testSecret,
				JWTPublicKeyFile: writeTemp(t, "k.pem", pkixPEM(t, &k.ecA.PublicKey)),
				JWKSFile:         jwksFile(t, jwkOf(&k.rsaA.PublicKey, "ra"), jwkOf(&k.rsaB.PublicKey, "rb"))}
		}, []string{"HS256", "RS256", "ES256"}, 3, 5 * time.Second},
		{"leeway at the maximum", func(*testing.T) Config { return Config{JWTLeeway: 5 * time.Minute} }, nil, 0, 5 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := newVerifier(tc.cfg(t))
			if err != nil {
				t.Fatalf("newVerifier: %v", err)
			}
			if !slices.Equal(v.methods, tc.methods) || len(v.keys) != tc.keys || v.leeway != tc.leeway {
				t.Fatalf("methods %v, %d keys, leeway %s; want %v, %d, %s", v.methods, len(v.keys), v.leeway, tc.methods, tc.keys, tc.leeway)
			}
		})
	}
}

func TestKeyConfigErrorsNameTheFileAndTheProblem(t *testing.T) {
	t.Parallel()
	k := testTokenKeys()
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemFile := func(name string, data []byte) Config { return Config{JWTPublicKeyFile: file(name, data)} }
	jwks := func(name string, keys ...any) Config {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return Config{JWKSFile: file(name, b)}
	}
	raw := func(name, body string) Config { return Config{JWKSFile: file(name, []byte(body))} }
	ra := jwkOf(&k.rsaA.PublicKey, "a")
	ea := jwkOf(&k.ecA.PublicKey, "e")
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ecA)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	offCurve := with(ea, "y", b64url.EncodeToString(make([]byte, 32)))

	cases := []struct {
		name string
		cfg  Config
		want []string // every string must appear in the error
	}{
		{"missing PEM file", Config{JWTPublicKeyFile: filepath.Join(dir, "nope.pem")},
			[]string{`jwt_public_key "` + filepath.Join(dir, "nope.pem") + `"`, "cannot open it", "no such file"}},
		{"bad PEM", pemFile("bad.pem", []byte("not a key")), []string{`bad.pem"`, "no PEM block found"}},
		{"bad DER in PEM", pemFile("der.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})),
			[]string{"der.pem", "cannot parse the PUBLIC KEY block"}},
		{"bad DER in PKCS1 PEM", pemFile("der1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("junk")})),
			[]string{"der1.pem", "cannot parse the RSA PUBLIC KEY block"}},
		{"two PEM blocks", pemFile("two.pem", append(pkixPEM(t, &k.rsaA.PublicKey), pkixPEM(t, &k.rsaB.PublicKey)...)),
			[]string{"two.pem", "more than one PEM block"}},
		{"private key PEM", pemFile("priv.pem", privPEM), []string{"priv.pem", "PRIVATE KEY", "public key only"}},
		{"other PEM type", pemFile("csr.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}})),
			[]string{"csr.pem", `"CERTIFICATE REQUEST"`, `want "PUBLIC KEY" or "RSA PUBLIC KEY"`}},
		{"1024-bit RSA PEM", pemFile("small.pem", pkixPEM(t, &k.rsa1024.PublicKey)),
			[]string{"small.pem", "RSA key is 1024 bits; use at least 2048"}},
		{"1024-bit RSA PKCS1 PEM", pemFile("small1.pem", pkcs1PEM(&k.rsa1024.PublicKey)),
			[]string{"small1.pem", "RSA key is 1024 bits"}},
		{"P-384 PEM", pemFile("p384.pem", pkixPEM(t, &k.ecP384.PublicKey)),
			[]string{"p384.pem", "curve P-384; only P-256 (ES256) is supported"}},

		{"JWKS not JSON", raw("notjson.json", "keys: []"), []string{`jwks "`, "notjson.json", "not a JWK set"}},
		{"JWKS not an object", raw("array.json", "[]"), []string{"array.json", "want a JSON object, not array"}},
		{"single JWK", raw("single.json", `{"kty":"RSA","n":"AQAB","e":"AQAB"}`), []string{"single.json", "wrap it in a set"}},
		{"no keys member", raw("nokeys.json", `{}`), []string{"nokeys.json", `no "keys" list`}},
		{"keys not a list", raw("keysobj.json", `{"keys":{}}`), []string{"keysobj.json", `"keys" must be a JSON array, not object`}},
		{"empty key list", raw("empty.json", `{"keys":[]}`), []string{"empty.json", "no signing keys"}},
		{"only encryption keys", jwks("enc.json", with(ra, "use", "enc")), []string{"enc.json", "no signing keys"}},
		{"duplicate kid", jwks("dup.json", ra, with(jwkOf(&k.rsaB.PublicKey, ""), "kid", "a")),
			[]string{"dup.json", `key 1 (kid "a"): kid is also used by key 0`}},
		{"duplicate kid across kinds", jwks("dup2.json", ra, with(ea, "kid", "a")),
			[]string{"dup2.json", `key 1 (kid "a"): kid is also used by key 0`}},
		{"kid not a string", jwks("kidnum.json", with(ra, "kid", 7)), []string{"kidnum.json", `key 0: "kid" must be a JSON string, not number`}},
		{"bad base64 in n", jwks("n.json", with(ra, "n", "not+base64/")), []string{"n.json", `key 0 (kid "a"): n is not base64url`}},
		{"missing e", jwks("e.json", with(ra, "e", nil)), []string{"e.json", `key 0 (kid "a"): e is missing`}},
		{"even exponent", jwks("e2.json", with(ra, "e", "Ag")), []string{"e2.json", "RSA exponent 2 is invalid"}},
		{"huge exponent", jwks("e3.json", with(ra, "e", b64url.EncodeToString(make([]byte, 8)))), []string{"e3.json"}},
		{"1024-bit RSA JWK", jwks("smallj.json", jwkOf(&k.rsa1024.PublicKey, "s")),
			[]string{"smallj.json", `key 0 (kid "s"): the RSA key is 1024 bits; use at least 2048`}},
		{"RSA key for RS384", jwks("rs384.json", with(ra, "alg", "RS384")),
			[]string{"rs384.json", `key 0 (kid "a"): alg "RS384" is not supported for an RSA key (want RS256)`}},
		{"EC key for ES384", jwks("es384.json", with(ea, "alg", "ES384")), []string{`alg "ES384" is not supported for a P-256 key`}},
		{"unknown kty", jwks("okp.json", map[string]any{"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "ed"}),
			[]string{"okp.json", `key 0 (kid "ed"): kty "OKP" is not supported (want "RSA" or "EC")`}},
		{"oct key", jwks("oct.json", map[string]any{"kty": "oct", "k": "c2VjcmV0"}), []string{"oct.json", "key 0: ", "private key material"}},
		{"missing kty", jwks("nokty.json", map[string]any{"n": "AQAB"}), []string{"nokty.json", "key 0: kty is missing"}},
		{"P-384 JWK", jwks("p384.json", jwkOf(&k.ecP384.PublicKey, "x")),
			[]string{"p384.json", `key 0 (kid "x"): curve "P-384" is not supported (want "P-256")`}},
		{"missing crv", jwks("nocrv.json", with(ea, "crv", nil)), []string{"crv is missing"}},
		{"short x", jwks("shortx.json", with(ea, "x", "AAAA")), []string{"x and y must be 32 bytes each for P-256; they are 3 and 32"}},
		{"point off the curve", jwks("offcurve.json", offCurve), []string{"offcurve.json", `key 0 (kid "e"): x and y are not a point on P-256`}},
		{"private RSA JWK", jwks("privrsa.json", with(ra, "d", "AQAB")), []string{`key 0 (kid "a"): the key holds private key material`}},
		{"every bad key reported", jwks("many.json", with(ra, "n", "!"), with(ea, "crv", "P-521"), map[string]any{"kty": "RSA", "kid": "z"}),
			[]string{`key 0 (kid "a"): n is not base64url`, `key 1 (kid "e"): curve "P-521"`, `key 2 (kid "z"): n is missing`}},

		{"kid-less key among several", Config{
			JWTPublicKeyFile: file("pem-and-jwks.pem", pkixPEM(t, &k.rsaA.PublicKey)),
			JWKSFile:         file("pem-and-jwks.json", mustJSON(t, map[string]any{"keys": []any{jwkOf(&k.rsaB.PublicKey, "b")}})),
		}, []string{"pem-and-jwks.pem", "the key has no kid but is one of 2 RS256 keys, so no token can select it"}},
		{"two kid-less JWKS keys", jwks("nokids.json", jwkOf(&k.ecA.PublicKey, ""), jwkOf(&k.ecB.PublicKey, "")),
			[]string{"nokids.json", "key 0: the key has no kid but is one of 2 ES256 keys", "key 1: the key has no kid"}},

		{"leeway 10m", Config{JWTLeeway: 10 * time.Minute}, []string{"jwt_leeway 10m0s: want 0 to 5m0s (0 means the default, 5s)"}},
		{"negative leeway", Config{JWTLeeway: -time.Second}, []string{"jwt_leeway -1s: want 0 to 5m0s"}},
		{"every problem at once", Config{JWTLeeway: time.Hour, JWTPublicKeyFile: file("all.pem", []byte("x")), JWKSFile: file("all.json", []byte("{}"))},
			[]string{"jwt_leeway 1h0m0s", "all.pem", "no PEM block", "all.json", `no "keys" list`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := newVerifier(tc.cfg)
			if err == nil {
				t.Fatalf("newVerifier accepted it (methods %v)", v.methods)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
