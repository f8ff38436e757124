package httpapi

import (
	"strings"
	"testing"

	"github.com/heraldrt/herald/server"
)

func TestGrantsAPIIsForTheAPIKeyAndValidates(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Rules: []server.RuleConfig{{Pattern: "chat_room_{room_id}", Subscribe: []string{"grant"}, Publish: []string{"grant"}}}})
	userTok, _ := server.MintToken(testSecret, server.Claims{RegisteredClaims: registered("17")})
	cases := []struct {
		name, method, auth, body string
		code                     int
		msg                      string
	}{
		{"user may not grant", "POST", userTok, `{"user":"17","channel":"chat_room_1"}`, 403, "needs the API key"},
		{"anonymous", "POST", "", `{"user":"17","channel":"chat_room_1"}`, 401, "credentials"},
		{"no user", "POST", testAPIKey, `{"channel":"chat_room_1"}`, 400, "user is required"},
		{"bad channel", "POST", testAPIKey, `{"user":"1","channel":"chat room"}`, 400, `" " at position 5`},
		{"bad action", "POST", testAPIKey, `{"user":"1","channel":"a","actions":["read"]}`, 400, `action "read" is unknown`},
		{"delete bad action", "DELETE", testAPIKey, `{"user":"1","channel":"a","actions":["x"]}`, 400, `action "x"`},
	}
	for _, tc := range cases {
		var e apiError
		code, _, raw := f.call(t, tc.method, "/api/grants", tc.auth, tc.body, &e)
		if code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s", tc.name, code, raw)
		}
	}
	var g server.Grant
	if code, _, raw := f.call(t, "POST", "/api/grants", testAPIKey, `{"user":"17","channel":"chat_room_1","actions":["subscribe","history"]}`, &g); code != 200 ||
		strings.Join(g.Actions, ",") != "subscribe,history" {
		t.Fatalf("grant: %d %s", code, raw)
	}
	f.call(t, "POST", "/api/grants", testAPIKey, `{"user":"17","channel":"chat_room_2*"}`, &g)
	if strings.Join(g.Actions, ",") != "subscribe,publish,history,presence" {
		t.Fatalf("default actions %v", g.Actions)
	}
	var list struct {
		User   string         `json:"user"`
		Grants []server.Grant `json:"grants"`
	}
	f.call(t, "GET", "/api/grants?user=17", testAPIKey, "", &list)
	if len(list.Grants) != 2 || list.Grants[0].Channel != "chat_room_1" || list.Grants[1].Channel != "chat_room_2*" {
		t.Fatalf("list %+v", list)
	}
	f.call(t, "DELETE", "/api/grants", testAPIKey, `{"user":"17","channel":"chat_room_1","actions":["history"]}`, &g)
	if strings.Join(g.Actions, ",") != "subscribe" {
		t.Fatalf("after partial delete %v", g.Actions)
	}
	f.call(t, "DELETE", "/api/grants", testAPIKey, `{"user":"17","channel":"chat_room_2*"}`, &g)
	f.call(t, "GET", "/api/grants?user=17", testAPIKey, "", &list)
	if len(list.Grants) != 1 {
		t.Fatalf("after delete %+v", list)
	}
	if code, _, _ := f.call(t, "GET", "/api/grants", testAPIKey, "", nil); code != 400 {
		t.Fatalf("list without user: %d", code)
	}
}
