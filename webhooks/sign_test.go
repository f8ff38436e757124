package webhooks

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The example of the Standard Webhooks specification: its secret, id,
// timestamp and body, and the signature it gives for them.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

func TestSignatureMatchesTheSpecificationsExample(t *testing.T) {
	t.Parallel()
	got := Signature([]Secret{mustSecret(t, specSecret)}, specID, time.Unix(specTimestamp, 0), []byte(specBody))
	if got != specSignature {
		t.Fatalf("signature %q, want %q", got, specSignature)
	}
}

// independentSignature computes a signature from the standard's words
// alone, sharing no code with the package.
func independentSignature(secret, id string, ts int64, body []byte) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestSignCarriesOneSignaturePerSecretDuringARotation(t *testing.T) {
	t.Parallel()
	oldText, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	newText, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	old, cur := mustSecret(t, oldText), mustSecret(t, newText)
	body := []byte(`{"type":"message","data":{"channel":"chat_room_7","offset":3}}`)
	ts := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	Sign(h, []Secret{old, cur}, "evt_1", ts, body)

	if h.Get(HeaderID) != "evt_1" || h.Get(HeaderTimestamp) != "1800000000" {
		t.Fatalf("headers %v", h)
	}
	want := independentSignature(oldText, "evt_1", ts.Unix(), body) + " " + independentSignature(newText, "evt_1", ts.Unix(), body)
	if got := h.Get(HeaderSignature); got != want {
		t.Fatalf("signature header %q, want %q", got, want)
	}
	// A receiver holding either secret accepts the request.
	for _, held := range [][]Secret{{old}, {cur}, {old, cur}} {
		if err := Verify(h, body, held, ts, DefaultTolerance); err != nil {
			t.Errorf("receiver holding %d secret(s): %v", len(held), err)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	sec := mustSecret(t, specSecret)
	other, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Unix(specTimestamp, 0)
	signed := func() http.Header {
		h := http.Header{}
		Sign(h, []Secret{sec}, specID, sent, []byte(specBody))
		return h
	}
	cases := []struct {
		name    string
		edit    func(h http.Header) // changes the signed headers
		body    string
		secrets []Secret
		now     time.Time
		want    error
	}{
		{name: "a changed body", body: `{"test": 2432232315}`, want: ErrSignature},
		{name: "a changed id", edit: func(h http.Header) { h.Set(HeaderID, "msg_other") }, want: ErrSignature},
		{name: "a changed timestamp", edit: func(h http.Header) { h.Set(HeaderTimestamp, fmt.Sprint(specTimestamp+1)) }, now: sent.Add(time.Second), want: ErrSignature},
		{name: "another secret", secrets: []Secret{mustSecret(t, other)}, want: ErrSignature},
		{name: "a signature of another scheme", edit: func(h http.Header) { h.Set(HeaderSignature, strings.Replace(h.Get(HeaderSignature), "v1,", "v2,", 1)) }, want: ErrSignature},
		{name: "too old", now: sent.Add(DefaultTolerance + time.Second), want: ErrTimestamp},
		{name: "from the future", now: sent.Add(-DefaultTolerance - time.Second), want: ErrTimestamp},
		{name: "a timestamp that is no number", edit: func(h http.Header) { h.Set(HeaderTimestamp, "yesterday") }, want: ErrTimestamp},
		{name: "no id", edit: func(h http.Header) { h.Del(HeaderID) }, want: ErrMissingHeader},
		{name: "no signature", edit: func(h http.Header) { h.Del(HeaderSignature) }, want: ErrMissingHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := signed()
			if tc.edit != nil {
				tc.edit(h)
			}
			body, secrets, now := specBody, []Secret{sec}, sent
			if tc.body != "" {
				body = tc.body
			}
			if tc.secrets != nil {
				secrets = tc.secrets
			}
			if !tc.now.IsZero() {
				now = tc.now
			}
			err := Verify(h, []byte(body), secrets, now, DefaultTolerance)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	// Within the tolerance, on either side, the request is accepted.
	for _, now := range []time.Time{sent.Add(DefaultTolerance), sent.Add(-DefaultTolerance)} {
		if err := Verify(signed(), []byte(specBody), []Secret{sec}, now, DefaultTolerance); err != nil {
			t.Errorf("at %s from the timestamp: %v", now.Sub(sent), err)
		}
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	key := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	cases := []struct {
		in      string
		ok      bool
		message string // part of the error
	}{
		{in: specSecret, ok: true},
		{in: "whsec_" + key(24), ok: true},
		{in: "whsec_" + key(64), ok: true},
		{in: "whsec_" + strings.TrimRight(key(32), "="), ok: true}, // unpadded
		{in: key(32), message: `must start with "whsec_"`},
		{in: "whsec_not base64!", message: "is not base64"},
		{in: "whsec_" + key(16), message: "16 bytes, want 24 to 64"},
		{in: "whsec_" + key(65), message: "65 bytes, want 24 to 64"},
		{in: "", message: `must start with "whsec_"`},
	}
	for _, tc := range cases {
		sec, err := ParseSecret(tc.in)
		switch {
		case tc.ok && err != nil:
			t.Errorf("ParseSecret(%q): %v", tc.in, err)
		case !tc.ok && (!errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), tc.message)):
			t.Errorf("ParseSecret(%q): %v, want ErrSecret saying %q", tc.in, err, tc.message)
		case !tc.ok && strings.Contains(err.Error(), strings.TrimPrefix(tc.in, "whsec_")) && tc.in != "whsec_" && len(tc.in) > 8:
			t.Errorf("ParseSecret(%q): the error %q repeats the secret", tc.in, err)
		case tc.ok && (sec.String() != "whsec_…" || strings.Contains(fmt.Sprint(sec), "Mf")):
			t.Errorf("a secret prints as %q", sec)
		}
	}
}
