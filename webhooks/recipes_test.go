package webhooks

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// TestReceiverSnippetsVerify runs the signature checks the README shows
// (examples/webhooks/verify.mjs and verify.py, which make deps installs
// node and python3 for) against requests signed here: they accept what
// Herald signs, with either secret of a rotation, and refuse a changed
// body, another secret and a stale timestamp.
func TestReceiverSnippetsVerify(t *testing.T) {
	t.Parallel()
	newSecret, oldSecret, other := freshSecret(t), freshSecret(t), freshSecret(t)
	keys := []Secret{mustSecret(t, newSecret), mustSecret(t, oldSecret)}
	body := []byte(`{"id":"m_01","type":"message","timestamp":"2026-12-05T08:30:00.123Z","data":{"channel":"chat_room_7","data":{"text":"héllo"}}}`)
	signed := func(at time.Time) http.Header {
		h := http.Header{}
		Sign(h, keys, "m_01", at, body)
		return h
	}
	now := time.Now()
	cases := []struct {
		name   string
		secret string
		header http.Header
		body   []byte
		valid  bool
	}{
		{"signed now", newSecret, signed(now), body, true},
		{"the old secret of a rotation", oldSecret, signed(now), body, true},
		{"another secret", other, signed(now), body, false},
		{"a changed body", newSecret, signed(now), bytes.Replace(body, []byte("héllo"), []byte("hello"), 1), false},
		{"ten minutes old", newSecret, signed(now.Add(-10 * time.Minute)), body, false},
	}
	for _, script := range [][]string{{"node", "../examples/webhooks/verify.mjs"}, {"python3", "../examples/webhooks/verify.py"}} {
		if _, err := exec.LookPath(script[0]); err != nil {
			t.Fatalf("%s is not installed (make deps installs it): %v", script[0], err)
		}
		for _, tc := range cases {
			t.Run(script[0]+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				in, _ := json.Marshal(map[string]any{"body": string(tc.body), "headers": map[string]string{
					"webhook-id": tc.header.Get("webhook-id"), "webhook-timestamp": tc.header.Get("webhook-timestamp"),
					"webhook-signature": tc.header.Get("webhook-signature")}})
				cmd := exec.Command(script[0], script[1], tc.secret)
				cmd.Stdin = bytes.NewReader(in)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if err != nil && !errors.As(err, &exit) {
					t.Fatalf("run %s: %v\n%s", script[1], err, out)
				}
				want := "invalid\n"
				if tc.valid {
					want = "valid\n"
				}
				if string(out) != want || (err == nil) != tc.valid {
					t.Fatalf("%s said %q (%v), want %q", script[1], out, err, want)
				}
				// Herald's own check agrees.
				if got := Verify(tc.header, tc.body, []Secret{mustSecret(t, tc.secret)}, now, DefaultTolerance) == nil; got != tc.valid {
					t.Fatalf("Verify says valid=%v, want %v", got, tc.valid)
				}
			})
		}
	}
}

func freshSecret(t *testing.T) string {
	t.Helper()
	s, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
