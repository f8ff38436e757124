package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldrt/herald/store"
)

// fillState writes the state both state tests check: five grant keys, one
// replaced and one deleted, and a ban key.
func fillState(t *testing.T, e store.Engine) {
	t.Helper()
	ctx := context.Background()
	for i := range 5 {
		if err := e.PutState(ctx, fmt.Sprintf("grant/u%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.PutState(ctx, "grant/u2", []byte{22}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutState(ctx, "ban/u1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteState(ctx, "grant/u3"); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteState(ctx, "missing"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
}

// checkState checks what fillState wrote.
func checkState(t *testing.T, e store.Engine) {
	t.Helper()
	ctx := context.Background()
	scan := func(prefix string) string {
		var kv []string
		if err := e.ScanState(ctx, prefix, func(k string, v []byte) error {
			kv = append(kv, fmt.Sprintf("%s=%v", k, v))
			return nil
		}); err != nil {
			t.Fatalf("ScanState(%q): %v", prefix, err)
		}
		return strings.Join(kv, " ")
	}
	cases := []struct{ prefix, want string }{
		{"grant/", "grant/u0=[0] grant/u1=[1] grant/u2=[22] grant/u4=[4]"},
		{"grant/u1", "grant/u1=[1]"},
		{"", "ban/u1=[120] grant/u0=[0] grant/u1=[1] grant/u2=[22] grant/u4=[4]"},
		{"nothing/", ""},
	}
	for _, tc := range cases {
		if got := scan(tc.prefix); got != tc.want {
			t.Errorf("ScanState(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	if v, ok, err := e.GetState(ctx, "ban/u1"); err != nil || !ok || string(v) != "x" {
		t.Errorf("GetState(ban/u1) = %q, %v, %v; want x", v, ok, err)
	}
	if v, ok, err := e.GetState(ctx, "grant/u3"); err != nil || ok {
		t.Errorf("GetState of a deleted key = %q, %v, %v; want none", v, ok, err)
	}
}

// testState: small state is put, replaced, read, deleted and scanned by
// prefix in key order; a scan stops at its callback's error; state is no
// channel; bad keys are refused.
func testState(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx := context.Background()
	fillState(t, e)
	checkState(t, e)

	stop := errors.New("stop")
	n := 0
	if err := e.ScanState(ctx, "grant/", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ScanState whose callback fails: %v after %d calls; want stop after 1", err, n)
	}
	if list, err := e.Channels(ctx, "", 0); err != nil || len(list) != 0 {
		t.Fatalf("state keys listed as channels: %+v, %v", list, err)
	}
	if p := mustRead(t, e, "grant/u0", 0, 0); p.Epoch != "" {
		t.Fatalf("a state key reads as a channel: %+v", p)
	}
	if _, err := e.Append(ctx, "ban/u1", store.Record{Payload: []byte("a channel")}); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := e.GetState(ctx, "ban/u1"); string(v) != "x" {
		t.Fatalf("a channel of the same name changed the state to %q", v)
	}
	for _, key := range []string{"", strings.Repeat("k", 1025)} {
		if err := e.PutState(ctx, key, []byte("v")); err == nil {
			t.Errorf("PutState with a key of %d bytes succeeded; want an error", len(key))
		}
	}
	if err := e.PutState(ctx, strings.Repeat("k", 1024), []byte("v")); err != nil {
		t.Errorf("PutState with a key of 1,024 bytes: %v", err)
	}
}

// testStateSurvivesReopen: state written before a close is there after a
// reopen.
func testStateSurvivesReopen(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	fillState(t, f.e)
	checkState(t, f.reopen())
}
