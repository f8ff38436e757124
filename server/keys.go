package server

// Key loading for user tokens. newVerifier reads the HS256 secret, the PEM
// public key and the JWKS file once, when the server starts, and checks
// every key there, so a bad key stops start-up instead of failing tokens
// one by one. identity.go verifies tokens against the result.

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"strings"
	"time"
)

const (
	// maxJWTLeeway bounds Config.JWTLeeway: a larger skew would keep
	// expired tokens alive for longer than a clock problem explains.
	maxJWTLeeway = 5 * time.Minute
	// minRSABits is the smallest RSA modulus accepted (NIST SP 800-131A
	// disallows RSA below 2048 bits for signatures).
	minRSABits = 2048
	// maxRSABits bounds the cost of one RS256 verification; Go's
	// crypto/rsa refuses larger keys too.
	maxRSABits = 16384
	// maxKeyFileBytes bounds a key file. A PEM key or a JWKS is a few KiB;
	// anything near this is the wrong file.
	maxKeyFileBytes = 1 << 20
)

// The token algorithms Herald verifies. Each key type verifies exactly one
// of them, so a key can never be used with an algorithm of another family.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// verifier holds the keys that verify user tokens. newVerifier builds it
// once; it is read-only afterwards and safe for concurrent use.
type verifier struct {
	// secret verifies HS256; nil when no JWT secret is configured.
	secret []byte
	// keys verify RS256 and ES256: the PEM key first, then the JWKS keys in
	// file order.
	keys []publicKey
	// methods are the accepted token algorithms: HS256 when there is a
	// secret, RS256 when there is an RSA key, ES256 when there is a P-256
	// key. Empty means user tokens are disabled.
	methods []string
	// leeway is the clock skew allowed on exp, nbf and iat.
	leeway time.Duration
}

// publicKey is one configured RS256 or ES256 key.
type publicKey struct {
	kid string // "" when the key has none (always for the PEM key)
	alg string // algRS256 for *rsa.PublicKey, algES256 for *ecdsa.PublicKey
	key any    // *rsa.PublicKey or *ecdsa.PublicKey, matching alg
	// from names the key in start-up errors.
	from string
}

// newVerifier loads and checks the token keys of cfg. Its errors name the
// configuration field, the file and, for a JWKS, the key's index and kid;
// it reports every problem at once.
func newVerifier(cfg Config) (*verifier, error) {
	v := &verifier{leeway: cfg.JWTLeeway}
	var errs []error
	switch {
	case cfg.JWTLeeway == 0:
		v.leeway = tokenLeeway
	case cfg.JWTLeeway < 0 || cfg.JWTLeeway > maxJWTLeeway:
		errs = append(errs, &ConfigError{Keys: []string{"jwt_leeway"}, Err: fmt.Errorf("jwt_leeway %s: want 0 to %s (0 means the default, %s)", cfg.JWTLeeway, maxJWTLeeway, tokenLeeway)})
	}
	if cfg.JWTSecret != "" {
		v.secret = []byte(cfg.JWTSecret)
	}
	if cfg.JWTPublicKeyFile != "" {
		from := fmt.Sprintf("jwt_public_key %q", cfg.JWTPublicKeyFile)
		k, err := loadPEMKey(cfg.JWTPublicKeyFile)
		if err != nil {
			errs = append(errs, &ConfigError{Keys: []string{"jwt_public_key"}, Err: fmt.Errorf("%s: %w", from, err)})
		} else {
			k.from = from
			v.keys = append(v.keys, k)
		}
	}
	if cfg.JWKSFile != "" {
		keys, err := loadJWKS(cfg.JWKSFile)
		if err != nil {
			errs = append(errs, &ConfigError{Keys: []string{"jwks"}, Err: err})
		}
		v.keys = append(v.keys, keys...)
	}
	if len(errs) == 0 {
		for _, err := range v.checkSelectable() {
			errs = append(errs, &ConfigError{Keys: []string{"jwks", "jwt_public_key"}, Err: err})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if v.secret != nil {
		v.methods = append(v.methods, algHS256)
	}
	for _, alg := range []string{algRS256, algES256} {
		if v.count(alg) > 0 {
			v.methods = append(v.methods, alg)
		}
	}
	return v, nil
}

// checkSelectable reports keys that no token could ever select: a token
// without a kid needs exactly one key of its algorithm, so a key without a
// kid among several of its algorithm is dead weight, most likely a
// mistake.
func (v *verifier) checkSelectable() []error {
	var errs []error
	for _, k := range v.keys {
		if n := v.count(k.alg); k.kid == "" && n > 1 {
			errs = append(errs, fmt.Errorf("%s: the key has no kid but is one of %d %s keys, so no token can select it; give every %s key a kid, or configure only one", k.from, n, k.alg, k.alg))
		}
	}
	return errs
}

// count returns how many keys verify alg.
func (v *verifier) count(alg string) int {
	n := 0
	for _, k := range v.keys {
		if k.alg == alg {
			n++
		}
	}
	return n
}

// enabled reports whether user tokens are accepted at all.
func (v *verifier) enabled() bool { return v != nil && len(v.methods) > 0 }

// accepts reports whether alg is one of the accepted algorithms.
func (v *verifier) accepts(alg string) bool {
	if v == nil {
		return false
	}
	for _, m := range v.methods {
		if m == alg {
			return true
		}
	}
	return false
}

// readKeyFile reads a key file whole, naming only the problem (the caller
// names the file).
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pathError(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, pathError(err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("the file is larger than %d bytes; is it the right file?", maxKeyFileBytes)
	}
	return data, nil
}

// pathError drops the path from an *fs.PathError: the caller names it.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot %s it: %w", pe.Op, pe.Err)
	}
	return err
}

// loadPEMKey reads a PEM public key: "PUBLIC KEY" (PKIX, RSA or ECDSA) or
// "RSA PUBLIC KEY" (PKCS #1).
func loadPEMKey(path string) (publicKey, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return publicKey{}, err
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return publicKey{}, errors.New(`no PEM block found; want "-----BEGIN PUBLIC KEY-----"`)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return publicKey{}, errors.New("the file holds more than one PEM block; give exactly one public key")
	}
	var pub any
	switch t := block.Type; {
	case t == "PUBLIC KEY":
		if pub, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
			return publicKey{}, fmt.Errorf("cannot parse the PUBLIC KEY block: %w", err)
		}
	case t == "RSA PUBLIC KEY":
		if pub, err = x509.ParsePKCS1PublicKey(block.Bytes); err != nil {
			return publicKey{}, fmt.Errorf("cannot parse the RSA PUBLIC KEY block: %w", err)
		}
	case strings.HasSuffix(t, "PRIVATE KEY"):
		// Refuse rather than derive the public key: a private key does not
		// belong on the server that only verifies.
		return publicKey{}, fmt.Errorf("the PEM block is a %s; give the public key only (openssl pkey -pubout)", t)
	case t == "CERTIFICATE":
		return publicKey{}, errors.New("the PEM block is a CERTIFICATE; give its public key (openssl x509 -pubkey -noout)")
	default:
		return publicKey{}, fmt.Errorf(`the PEM block is %q; want "PUBLIC KEY" or "RSA PUBLIC KEY"`, t)
	}
	return checkPublicKey(pub)
}

// checkPublicKey accepts RSA keys of 2048 bits or more (RS256) and ECDSA
// P-256 keys (ES256).
func checkPublicKey(pub any) (publicKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := checkRSAKey(k); err != nil {
			return publicKey{}, err
		}
		return publicKey{alg: algRS256, key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return publicKey{}, fmt.Errorf("the ECDSA key is on curve %s; only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return publicKey{alg: algES256, key: k}, nil
	case ed25519.PublicKey:
		return publicKey{}, errors.New("Ed25519 keys are not supported; want an RSA or ECDSA P-256 key")
	}
	return publicKey{}, fmt.Errorf("%T keys are not supported; want an RSA or ECDSA P-256 key", pub)
}

func checkRSAKey(k *rsa.PublicKey) error {
	switch bits := k.N.BitLen(); {
	case bits < minRSABits:
		return fmt.Errorf("the RSA key is %d bits; use at least %d", bits, minRSABits)
	case bits > maxRSABits:
		return fmt.Errorf("the RSA key is %d bits; at most %d are supported", bits, maxRSABits)
	}
	if k.N.Bit(0) == 0 {
		return errors.New("the RSA modulus is even, so it is not an RSA key")
	}
	if k.E < 3 || k.E%2 == 0 {
		return fmt.Errorf("the RSA exponent %d is invalid; want an odd number from 3 (usually 65537)", k.E)
	}
	return nil
}

// jwk is one entry of a JWK set (RFC 7517), with the members Herald reads.
// Other members (x5c, key_ops, ...) are ignored.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	// RSA (RFC 7518 §6.3.1).
	N string `json:"n"`
	E string `json:"e"`
	// EC (RFC 7518 §6.2.1).
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	// Private members: present means the file holds private keys.
	D string `json:"d"`
	K string `json:"k"`
}

// loadJWKS reads a JWK set: {"keys":[...]} with RSA and EC P-256 keys.
// Keys whose use is not "sig" are skipped; duplicate kids, malformed keys
// and unsupported kty, crv or alg are errors naming the key's index and
// kid.
func loadJWKS(path string) ([]publicKey, error) {
	file := fmt.Sprintf("jwks %q", path)
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
		Kty  *string           `json:"kty"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWK set (want {\"keys\":[…]}): %s", file, jsonProblem(err))
	}
	if set.Keys == nil {
		if set.Kty != nil {
			return nil, fmt.Errorf("%s: the file holds a single JWK; wrap it in a set: {\"keys\":[…]}", file)
		}
		return nil, fmt.Errorf("%s: the file has no \"keys\" list (want {\"keys\":[…]})", file)
	}
	var (
		keys []publicKey
		errs []error
		kids = map[string]int{}
	)
	for i, raw := range set.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			errs = append(errs, fmt.Errorf("%s: key %d: %s", file, i, jsonProblem(err)))
			continue
		}
		name := fmt.Sprintf("%s: key %d", file, i)
		if j.Kid != "" {
			name = fmt.Sprintf("%s: key %d (kid %q)", file, i, j.Kid)
		}
		if j.D != "" || j.K != "" {
			errs = append(errs, fmt.Errorf("%s: the key holds private key material; a JWKS for Herald lists public keys only", name))
			continue
		}
		if j.Use != "" && j.Use != "sig" {
			continue // an encryption key: not for tokens
		}
		k, err := parseJWK(j)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if j.Kid != "" {
			if first, dup := kids[j.Kid]; dup {
				errs = append(errs, fmt.Errorf("%s: kid is also used by key %d; kids must be unique", name, first))
				continue
			}
			kids[j.Kid] = i
		}
		k.kid, k.from = j.Kid, name
		keys = append(keys, k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: the set has no signing keys (want RSA or EC P-256 keys whose use is \"sig\" or unset)", file)
	}
	return keys, nil
}

// parseJWK decodes and checks one RSA or EC P-256 key.
func parseJWK(j jwk) (publicKey, error) {
	switch j.Kty {
	case "RSA":
		if j.Alg != "" && j.Alg != algRS256 {
			return publicKey{}, fmt.Errorf("alg %q is not supported for an RSA key (want %s)", j.Alg, algRS256)
		}
		n, err := b64Member("n", j.N)
		if err != nil {
			return publicKey{}, err
		}
		e, err := b64Member("e", j.E)
		if err != nil {
			return publicKey{}, err
		}
		ev := new(big.Int).SetBytes(e)
		if ev.BitLen() > 31 {
			return publicKey{}, fmt.Errorf("the RSA exponent e is %d bits long; at most 31 are supported", ev.BitLen())
		}
		return checkPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev.Int64())})
	case "EC":
		switch j.Crv {
		case "P-256":
		case "":
			return publicKey{}, errors.New("crv is missing (want \"P-256\")")
		default:
			return publicKey{}, fmt.Errorf("curve %q is not supported (want \"P-256\")", j.Crv)
		}
		if j.Alg != "" && j.Alg != algES256 {
			return publicKey{}, fmt.Errorf("alg %q is not supported for a P-256 key (want %s)", j.Alg, algES256)
		}
		x, err := b64Member("x", j.X)
		if err != nil {
			return publicKey{}, err
		}
		y, err := b64Member("y", j.Y)
		if err != nil {
			return publicKey{}, err
		}
		// RFC 7518 §6.2.1.2: x and y are the full 32 bytes, leading zeros
		// included.
		if len(x) != 32 || len(y) != 32 {
			return publicKey{}, fmt.Errorf("x and y must be 32 bytes each for P-256; they are %d and %d", len(x), len(y))
		}
		point := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return publicKey{}, errors.New("x and y are not a point on P-256")
		}
		return checkPublicKey(pub)
	case "":
		return publicKey{}, errors.New("kty is missing (want \"RSA\" or \"EC\")")
	}
	return publicKey{}, fmt.Errorf("kty %q is not supported (want \"RSA\" or \"EC\")", j.Kty)
}

// b64Member decodes a base64url key member (RFC 7518 §2: no padding;
// trailing '=' is tolerated, as some producers add it).
func b64Member(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%s is missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%s is not base64url: %w", name, err)
	}
	return b, nil
}

// jsonProblem says what is wrong with a JSON document in a few words.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("want a JSON object, not %s", te.Value)
		}
		return fmt.Sprintf("%q must be a JSON %s, not %s", te.Field, jsonKind(te.Type.String()), te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "string"
	case strings.HasPrefix(goType, "[]"):
		return "array"
	}
	return "object"
}
