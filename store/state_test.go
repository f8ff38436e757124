package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestStateSurvivesReopenAndScansByPrefix(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := s.PutState(ctx, fmt.Sprintf("grant/u%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutState(ctx, "ban/u1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState(ctx, "grant/u3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState(ctx, "missing"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var keys []string
	if err := s.ScanState(ctx, "grant/", func(k string, v []byte) error {
		keys = append(keys, fmt.Sprintf("%s=%d", k, v[0]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(keys); got != "[grant/u0=0 grant/u1=1 grant/u2=2 grant/u4=4]" {
		t.Fatalf("scan = %s", got)
	}
	v, ok, err := s.GetState(ctx, "ban/u1")
	if err != nil || !ok || string(v) != "x" {
		t.Fatalf("get = %q %v %v", v, ok, err)
	}
	if _, ok, err := s.GetState(ctx, "grant/u3"); ok || err != nil {
		t.Fatalf("deleted key: %v %v", ok, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ScanState(ctx, "", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("scan did not stop: %v after %d", err, n)
	}
	if err := s.PutState(ctx, "", nil); err == nil {
		t.Fatal("empty key accepted")
	}
}
