package ws

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/server"
)

// The transport reads and writes its frames itself: these tests drive it
// with a client that speaks the wire byte by byte, and with gorilla's
// client where it negotiates what a browser does (compression).

// rawDial upgrades a plain TCP connection by hand and returns it with a
// reader positioned after the handshake's answer.
func (f *fixture) rawDial(t *testing.T, extraHeaders ...string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n%s\r\n", key, apiKey,
		strings.Join(append(extraHeaders, ""), "\r\n"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	return conn, br
}

// readFrame reads one server frame: its first byte and its payload. A
// server frame is never masked.
func readFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	if h[1]&maskBit != 0 {
		t.Fatal("the server masked a frame")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(br, l[:])
		n = int(l[0])<<8 | int(l[1])
	case 127:
		var l [8]byte
		io.ReadFull(br, l[:])
		n = 0
		for _, b := range l {
			n = n<<8 | int(b)
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("reading a payload of %d: %v", n, err)
	}
	return h[0], p
}

// nextData reads frames until a data frame, and returns its JSON.
func nextData(t *testing.T, br *bufio.Reader) map[string]any {
	t.Helper()
	for {
		b0, p := readFrame(t, br)
		if b0&0x0f != opText {
			continue
		}
		if b0 != finBit|opText {
			t.Fatalf("data frame with first byte %#x, want a final text frame", b0)
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("frame %q: %v", p, err)
		}
		return m
	}
}

func TestPingsAreAnsweredAndACloseIsEchoed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	conn, br := f.rawDial(t)
	if m := nextData(t, br); m["type"] != "connected" {
		t.Fatalf("first push %v", m)
	}
	// A ping and an op in one write, the op's frame cut from the ping's
	// only by the write boundary of the client's choice.
	stream := append(clientFrame(finBit|opPing, []byte("are you there")), text(`{"id":1,"op":"ping"}`)...)
	for _, b := range stream { // byte by byte: every frame arrives cut
		if _, err := conn.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	gotPong, gotReply := false, false
	for !gotPong || !gotReply {
		b0, p := readFrame(t, br)
		switch b0 {
		case finBit | opPong:
			if string(p) != "are you there" {
				t.Fatalf("pong %q", p)
			}
			gotPong = true
		case finBit | opText:
			var m map[string]any
			json.Unmarshal(p, &m)
			if m["id"] != 1.0 || m["ok"] != true {
				t.Fatalf("reply %s", p)
			}
			gotReply = true
		default:
			t.Fatalf("frame %#x %q", b0, p)
		}
	}
	// The client closes with 4000: the server answers with the same code
	// and ends the connection.
	conn.Write(clientFrame(finBit|opClose, append([]byte{0x0f, 0xa0}, "bye"...)))
	for {
		b0, p := readFrame(t, br)
		if b0 != finBit|opClose {
			continue
		}
		if len(p) != 2 || p[0] != 0x0f || p[1] != 0xa0 {
			t.Fatalf("close answered with %x, want 4000", p)
		}
		break
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the close: %v, want the end of the connection", err)
	}
}

func TestABrokenFrameClosesWithProtocolError(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	conn, br := f.rawDial(t)
	nextData(t, br)                                  // connected
	conn.Write([]byte{finBit | opText, 2, 'h', 'i'}) // not masked
	for {
		b0, p := readFrame(t, br)
		if b0 != finBit|opClose {
			continue
		}
		if code := int(p[0])<<8 | int(p[1]); code != websocket.CloseProtocolError {
			t.Fatalf("close %d %q, want %d", code, p[2:], websocket.CloseProtocolError)
		}
		return
	}
}

func TestASilentPeerIsDropped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{PingInterval: 50 * time.Millisecond, PongTimeout: 50 * time.Millisecond})
	_, br := f.rawDial(t)
	// The client reads but never answers a ping: past the ping interval
	// and the pong timeout it is dropped, pings first.
	pings := 0
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if pings == 0 {
				t.Fatalf("dropped before any ping: %v", err)
			}
			break // the end of the connection
		}
		n := int(h[1] & 0x7f)
		if n >= 126 {
			t.Fatalf("unexpected long frame %x", h)
		}
		io.CopyN(io.Discard, br, int64(n))
		if h[0] == finBit|opPing {
			pings++
		}
	}
	f.logs.waitFor(t, "reason=client_gone")
}

func TestCompressedConnectionsCarryEveryPush(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{Compression: true, Coalesce: 20 * time.Millisecond})
	dialer := &websocket.Dialer{EnableCompression: true}
	ws, resp, err := f.tryDial(nil, "", dialer)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
		t.Fatalf("compression not negotiated: %v", resp.Header)
	}
	c := f.wrap(t, ws)
	c.next() // connected
	ws.EnableWriteCompression(true)
	if r := c.call(map[string]any{"op": "subscribe", "channel": "zip"}); r["ok"] != true {
		t.Fatalf("subscribe over a compressed connection: %v", r)
	}
	// Single messages and batches, compressed each as one message.
	const n = 50
	for i := 1; i <= n; i++ {
		f.publish(t, "zip", fmt.Sprintf(`{"n":%d,"text":"%s"}`, i, strings.Repeat("abc", 100)))
	}
	for i, m := range c.messages(n) {
		if offsetOf(m) != uint64(i+1) {
			t.Fatalf("message %d has offset %v", i, m["offset"])
		}
	}
	// On the wire: the server's data frames are compressed (RSV1) and
	// inflate to the push; a client that does not ask gets plain frames.
	for _, ask := range []bool{true, false} {
		var br *bufio.Reader
		if ask {
			_, br = f.rawDial(t, "Sec-WebSocket-Extensions: permessage-deflate")
		} else {
			_, br = f.rawDial(t)
		}
		b0, p := readFrame(t, br)
		if compressed := b0 == finBit|rsv1Bit|opText; compressed != ask {
			t.Fatalf("asked for compression %v: first frame %#x", ask, b0)
		}
		if ask {
			if p, err = inflate(p, 1<<20, ""); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.Contains(string(p), `"type":"connected"`) {
			t.Fatalf("first push %q", p)
		}
	}
}
