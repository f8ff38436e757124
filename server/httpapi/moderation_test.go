package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldrt/herald/server"
)

func TestModerationRoutes(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Dev: true})
	userTok, _ := server.MintToken(testSecret, server.Claims{RegisteredClaims: registered("17")})
	cases := []struct {
		method, path, auth, body string
		code                     int
		msg                      string
	}{
		{"POST", "/api/disconnect", userTok, `{"user":"18"}`, 403, "needs the API key"},
		{"POST", "/api/disconnect", testAPIKey, `{}`, 400, "user is required"},
		{"POST", "/api/disconnect", testAPIKey, `{"user":"18"}`, 200, ""},
		{"POST", "/api/ban", testAPIKey, `{"user":"18","duration":"soon"}`, 400, `duration "soon"`},
		{"POST", "/api/ban", testAPIKey, `{"user":"18","duration":"-1h"}`, 400, "positive duration"},
		{"POST", "/api/ban", testAPIKey, `{"user":"18","duration":"1h"}`, 200, ""},
		{"DELETE", "/api/ban", userTok, `{"user":"18"}`, 403, "needs the API key"},
		{"DELETE", "/api/ban", testAPIKey, `{"user":"18"}`, 200, ""},
		{"POST", "/api/broadcast", testAPIKey, `{"data":1}`, 400, "name the channels"},
		{"POST", "/api/broadcast", testAPIKey, `{"users":true,"channels":["a"],"data":1}`, 400, "not both"},
		{"POST", "/api/broadcast", testAPIKey, `{"channels":["a"],"filter":{"x":"y"},"data":1}`, 400, "filter applies"},
		{"POST", "/api/broadcast", userTok, `{"users":true,"data":1}`, 403, "needs the API key"},
	}
	for _, tc := range cases {
		var e apiError
		code, _, raw := f.call(t, tc.method, tc.path, tc.auth, tc.body, nil)
		_ = json.Unmarshal([]byte(raw), &e)
		if code != tc.code || (tc.msg != "" && !strings.Contains(e.Error.Message, tc.msg)) {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.body, code, raw)
		}
	}
}
