package server

import (
	"context"
	"strings"
	"testing"

	"github.com/heraldrt/herald/store"
)

func TestSessionIDsProveTheirOwner(t *testing.T) {
	t.Parallel()
	ids := sessionIDs{key: []byte("0123456789abcdef0123456789abcdef")}
	other := sessionIDs{key: []byte("fedcba9876543210fedcba9876543210")}
	anon := Identity{Anonymous: true}
	for _, tc := range []struct {
		name  string
		owner Identity
		asker Identity
		ids   sessionIDs
		want  bool
	}{
		{"own user session", user("17"), user("17", "admin"), ids, true},
		{"another user's", user("17"), user("18"), ids, false},
		{"a user id that is a prefix", user("1"), user("17"), ids, false},
		{"the API key's", system, system, ids, true},
		{"the API key's, asked by a user", system, user("17"), ids, false},
		{"anonymous", anon, anon, ids, true},
		{"anonymous, asked by a user", anon, user("17"), ids, false},
		{"another server's key", user("17"), user("17"), other, false},
	} {
		id := ids.mint(tc.owner)
		if len(id) != sessionIDLen || !strings.HasPrefix(id, "s_") {
			t.Fatalf("%s: id %q", tc.name, id)
		}
		if got := tc.ids.owns(tc.asker, id); got != tc.want {
			t.Errorf("%s: owns = %v, want %v", tc.name, got, tc.want)
		}
	}
	if a, b := ids.mint(user("17")), ids.mint(user("17")); a == b {
		t.Fatal("two mints gave the same id")
	}
	for _, bad := range []string{"", "s_", "s_abc", "x_" + ids.mint(user("17"))[2:], strings.ToLower(ids.mint(user("17")))} {
		if ids.owns(user("17"), bad) {
			t.Errorf("malformed id %q accepted", bad)
		}
	}
}

func TestSessionKeySurvivesARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func() (*Server, *store.Store) {
		srv, st, err := Open(Config{APIKey: testAPIKey}, store.Options{Dir: dir, Durability: store.NoSync})
		if err != nil {
			t.Fatal(err)
		}
		return srv, st
	}
	srv, st := open()
	id := srv.ids.mint(user("17"))
	srv.Shutdown()
	st.Close()
	srv, st = open()
	defer st.Close()
	defer srv.Shutdown()
	if !srv.ids.owns(user("17"), id) {
		t.Fatal("a session id minted before the restart is not recognised after it")
	}
	if _, ok, err := st.GetState(context.Background(), sessionKeyState); !ok || err != nil {
		t.Fatalf("session key not stored: %v %v", ok, err)
	}
}
