package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a signed request (Standard Webhooks 1.0).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

const (
	secretPrefix = "whsec_"
	// minSecretBytes and maxSecretBytes bound a secret's key, as the
	// standard recommends: shorter is guessable, longer buys nothing
	// over SHA-256's block.
	minSecretBytes = 24
	maxSecretBytes = 64
	// signatureVersion prefixes each signature: the scheme, so that a
	// receiver can tell it from a future one.
	signatureVersion = "v1"
	// DefaultTolerance is how far a request's timestamp may be from the
	// receiver's clock before Verify refuses it (a replayed request).
	DefaultTolerance = 5 * time.Minute
)

// Errors Verify and ParseSecret return; test with errors.Is.
var (
	// ErrSecret: a secret is not "whsec_" and the base64 of 24 to 64 bytes.
	ErrSecret = errors.New("webhooks: bad secret")
	// ErrMissingHeader: a request lacks one of the three headers.
	ErrMissingHeader = errors.New("webhooks: missing header")
	// ErrTimestamp: the timestamp is not a number, or too far from now.
	ErrTimestamp = errors.New("webhooks: bad timestamp")
	// ErrSignature: no signature in the request matches any secret.
	ErrSignature = errors.New("webhooks: no matching signature")
)

// Secret is an endpoint's signing key.
type Secret struct {
	key []byte
}

// ParseSecret reads a secret written "whsec_<base64>" (standard base64,
// padded or not). The error names what is wrong without echoing the secret.
func ParseSecret(s string) (Secret, error) {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf(`%w: it must start with %q`, ErrSecret, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(rest)
	}
	if err != nil {
		return Secret{}, fmt.Errorf("%w: what follows %q is not base64", ErrSecret, secretPrefix)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return Secret{}, fmt.Errorf("%w: its key is %d bytes, want %d to %d", ErrSecret, len(key), minSecretBytes, maxSecretBytes)
	}
	return Secret{key: key}, nil
}

// NewSecret returns a fresh secret of 32 random bytes from rand (pass
// crypto/rand.Reader), written as ParseSecret reads it.
func NewSecret(rand io.Reader) (string, error) {
	key := make([]byte, 32)
	if _, err := io.ReadFull(rand, key); err != nil {
		return "", fmt.Errorf("webhooks: new secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// String hides the key, so a secret never reaches a log.
func (s Secret) String() string { return secretPrefix + "…" }

// sign returns s's signature of the request, "v1,<base64>".
func (s Secret) sign(id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return signatureVersion + "," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Signature returns the webhook-signature header value of a request: one
// signature per secret, space-separated (two while a secret is rotated).
func Signature(secrets []Secret, id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = s.sign(id, ts.Unix(), body)
	}
	return strings.Join(sigs, " ")
}

// Sign sets the three headers of a request carrying body, sent at ts.
func Sign(h http.Header, secrets []Secret, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Signature(secrets, id, ts, body))
}

// Verify checks a received request as a receiver would: the three headers
// are present, the timestamp is within tolerance of now, and one of the
// request's signatures matches one of secrets (compared in constant
// time). Herald uses it to check its own test deliveries; a Go receiver
// may use it as it is.
func Verify(h http.Header, body []byte, secrets []Secret, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for _, hv := range [...]struct{ name, value string }{{HeaderID, id}, {HeaderTimestamp, tsText}, {HeaderSignature, sigs}} {
		if hv.value == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, hv.name)
		}
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s from now, beyond the %s allowed", ErrTimestamp, d.Round(time.Second), tolerance)
	}
	for _, s := range secrets {
		want := []byte(s.sign(id, ts, body))
		for got := range strings.FieldsSeq(sigs) {
			if hmac.Equal([]byte(got), want) {
				return nil
			}
		}
	}
	return ErrSignature
}
