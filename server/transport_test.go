package server

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestTransportsRegisterByName: a transport's name labels its sessions
// and the session gauge (every registered transport shows, 0 included);
// registering again gives the same handle.
func TestTransportsRegisterByName(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	sse := srv.Transport("sse")
	srv.Transport("ws")
	if srv.Transport("sse") != sse {
		t.Fatal("registering sse again gave another handle")
	}
	if got := srv.Transports(); !slices.Equal(got, []string{"sse", "ws"}) {
		t.Fatalf("transports %v", got)
	}
	sess, _, err := sse.Open(context.Background(), system, OpenRequest{Channels: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ReasonClientGone)
	if sess.Transport() != "sse" {
		t.Fatalf("a session of sse says it is %q's", sess.Transport())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics())
	for name, want := range map[string]float64{"sse": 1, "ws": 0} {
		if got := gathered(t, reg, "herald_sessions", name); got != want {
			t.Errorf("herald_sessions{transport=%q} is %g, want %g", name, got, want)
		}
	}
}

// TestFrameIsBuiltOncePerMessageAndTransport: each transport's frame of a
// message is built once and kept; transports past the cached slots still
// get theirs, built every time.
func TestFrameIsBuiltOncePerMessageAndTransport(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	m := &Message{Channel: "a", Offset: 1, Raw: []byte(`{"channel":"a"}`)}
	for i := range frameSlots + 2 {
		tr := srv.Transport(string(rune('a' + i)))
		builds := 0
		build := func(m *Message) []byte { builds++; return append([]byte(tr.Name()+":"), m.Raw...) }
		for range 3 {
			if got := string(tr.Frame(m, build)); got != tr.Name()+`:{"channel":"a"}` {
				t.Fatalf("transport %s: frame %q", tr.Name(), got)
			}
		}
		want := 1
		if i >= frameSlots {
			want = 3 // no slot left: built every time, still right
		}
		if builds != want {
			t.Errorf("transport %s (#%d): built %d times for 3 uses, want %d", tr.Name(), i+1, builds, want)
		}
	}
}
