package longpoll

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldrt/herald/server"
)

// FuzzParsePoll feeds any query (GET) or body (POST) to the poll parser:
// it never panics, and a poll it takes waits within the allowed timeout.
func FuzzParsePoll(f *testing.F) {
	for _, s := range []string{
		"channel=a&channel=b&since=3&since=&epoch=e1&epoch=&timeout=10&positions=1",
		"cursor=c2.xyz&session=s_1&timeout=0",
		`{"channels":["a","b"],"since":["3",""],"epoch":["e",""],"timeout":25,"positions":true}`,
		`{"cursor":"c2.xyz","session":"s_1"}`,
		"timeout=-1", "timeout=99999999999999999999", "positions=maybe", "%zz",
	} {
		f.Add(s[0] == '{', []byte(s))
	}
	fx := newFixture(f, server.Config{}, Options{})
	max := fx.h.opts.MaxTimeout
	f.Fuzz(func(t *testing.T, post bool, in []byte) {
		var r *http.Request
		if post {
			r = httptest.NewRequest(http.MethodPost, "/poll", bytes.NewReader(in))
		} else {
			r = httptest.NewRequest(http.MethodGet, "/poll", nil)
			r.URL.RawQuery = string(in)
		}
		_, timeout, err := fx.h.parse(httptest.NewRecorder(), r)
		if err == nil && (timeout < 0 || timeout > max) {
			t.Fatalf("%q taken with a wait of %s, outside 0..%s", in, timeout, max)
		}
		if err != nil && server.AsError(err).Code != http.StatusBadRequest && server.AsError(err).Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%q refused with %v, want a 400 or 413", in, err)
		}
	})
}
