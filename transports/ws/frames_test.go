package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// clientFrame encodes a frame as a client sends it: masked (RFC 6455
// §5.3), with the given first byte (FIN, RSV and opcode).
func clientFrame(b0 byte, payload []byte) []byte {
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, maskBit|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, maskBit|127), uint64(n))
	}
	key := []byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= key[i&3]
	}
	return b
}

func text(s string) []byte { return clientFrame(finBit|opText, []byte(s)) }

// deflated compresses p as permessage-deflate does.
func deflated(p []byte) []byte {
	var out bytes.Buffer
	w, _ := flate.NewWriter(&out, flate.BestSpeed)
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(out.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// collect feeds the reader each chunk in turn and returns the messages as
// "op:payload" and the error, if any.
func collect(r *frameReader, chunks ...[]byte) ([]string, error) {
	var got []string
	for _, c := range chunks {
		err := r.feed(bytes.Clone(c), func(m message) bool {
			got = append(got, fmt.Sprintf("%d:%s", m.op, m.payload))
			return true
		})
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func TestFrameReaderPutsMessagesTogether(t *testing.T) {
	t.Parallel()
	ping := clientFrame(finBit|opPing, []byte("p"))
	long := strings.Repeat("é", 40_000) // an extended 16-bit, then 64-bit length
	frag := bytes.Join([][]byte{
		clientFrame(opText, []byte("frag")), ping,
		clientFrame(opContinuation, []byte("men")),
		clientFrame(finBit|opContinuation, []byte("ted")),
	}, nil)
	for _, tc := range []struct {
		name    string
		stream  []byte
		deflate bool
		want    []string
	}{
		{"one message", text(`{"op":"ping"}`), false, []string{`1:{"op":"ping"}`}},
		{"several in one read", append(text("a"), text("b")...), false, []string{"1:a", "1:b"}},
		{"16-bit length", text(long[:300]), false, []string{"1:" + long[:300]}},
		{"64-bit length", text(long), false, []string{"1:" + long}},
		{"fragments with a ping between", frag, false, []string{"9:p", "1:fragmented"}},
		{"control frames", bytes.Join([][]byte{ping, clientFrame(finBit|opPong, nil), clientFrame(finBit|opClose, []byte{3, 232})}, nil),
			false, []string{"9:p", "10:", "8:\x03\xe8"}},
		{"compressed", clientFrame(finBit|rsv1Bit|opText, deflated([]byte(`{"op":"ping","id":7}`))), true, []string{`1:{"op":"ping","id":7}`}},
		{"compressed in fragments", bytes.Join([][]byte{
			clientFrame(rsv1Bit|opText, deflated([]byte("hello, world"))[:3]),
			clientFrame(finBit|opContinuation, deflated([]byte("hello, world"))[3:]),
		}, nil), true, []string{"1:hello, world"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// All at once, then cut at every byte: the same messages.
			for _, cut := range []int{0, 1, 2, 3, 7} {
				r := &frameReader{maxMessage: 1 << 20, tooBig: "too big", deflate: tc.deflate}
				var chunks [][]byte
				if cut == 0 {
					chunks = [][]byte{tc.stream}
				} else {
					for s := tc.stream; len(s) > 0; {
						n := min(cut, len(s))
						chunks, s = append(chunks, s[:n]), s[n:]
					}
				}
				got, err := collect(r, chunks...)
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				if strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Fatalf("cut %d: got %q, want %q", cut, got, tc.want)
				}
				if r.buffered() || r.msg != nil {
					t.Errorf("cut %d: the reader holds bytes after whole messages", cut)
				}
			}
		})
	}
}

func TestFrameReaderRefusesBrokenFrames(t *testing.T) {
	t.Parallel()
	unmasked := []byte{finBit | opText, 2, 'h', 'i'}
	for _, tc := range []struct {
		name     string
		stream   []byte
		max      int64
		wantCode int
		wantText string
	}{
		{"unmasked", unmasked, 1 << 20, websocket.CloseProtocolError, "bad MASK"},
		{"binary", clientFrame(finBit|opBinary, []byte{1, 2}), 1 << 20, websocket.CloseUnsupportedData, "binary frames"},
		{"too big", text(strings.Repeat("x", 200)), 100, websocket.CloseMessageTooBig, "too big"},
		{"too big in fragments", append(clientFrame(opText, make([]byte, 60)), clientFrame(finBit|opContinuation, make([]byte, 60))...),
			100, websocket.CloseMessageTooBig, "too big"},
		{"reserved bits", clientFrame(finBit|0x20|opText, []byte("x")), 1 << 20, websocket.CloseProtocolError, "reserved bits"},
		{"compressed without deflate", clientFrame(finBit|rsv1Bit|opText, []byte("x")), 1 << 20, websocket.CloseProtocolError, "reserved bits"},
		{"unknown opcode", clientFrame(finBit|0x3, nil), 1 << 20, websocket.CloseProtocolError, "unknown opcode"},
		{"long ping", clientFrame(finBit|opPing, make([]byte, 126)), 1 << 20, websocket.CloseProtocolError, "control frame"},
		{"fragmented ping", clientFrame(opPing, nil), 1 << 20, websocket.CloseProtocolError, "control frame"},
		{"stray continuation", clientFrame(finBit|opContinuation, []byte("x")), 1 << 20, websocket.CloseProtocolError, "continuation"},
		{"new message mid-message", append(clientFrame(opText, []byte("a")), text("b")...), 1 << 20, websocket.CloseProtocolError, "message start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &frameReader{maxMessage: tc.max, tooBig: "too big"}
			got, err := collect(r, tc.stream)
			var re *readError
			if !errors.As(err, &re) {
				t.Fatalf("got %q, %v; want a close %d", got, err, tc.wantCode)
			}
			if re.code != tc.wantCode || !strings.Contains(re.text, tc.wantText) {
				t.Errorf("close %d %q, want %d containing %q", re.code, re.text, tc.wantCode, tc.wantText)
			}
		})
	}
}

func TestCloseFramesAreCheckedBeforeTheyAreAnswered(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload  []byte
		wantCode int // the code answered; 0: refused
	}{
		{nil, websocket.CloseNoStatusReceived},
		{[]byte{0x03, 0xe8}, 1000},
		{append([]byte{0x0f, 0xa0}, "bye"...), 4000},
		{[]byte{0x03}, 0},
		{[]byte{0x03, 0xed}, 0},                     // 1005 is never sent
		{append([]byte{0x03, 0xe8}, 0xff, 0xfe), 0}, // a reason that is not UTF-8
		{[]byte{0x13, 0x88}, 0},                     // 5000: out of range
	} {
		code, err := closeReceived(tc.payload)
		if tc.wantCode == 0 {
			if err == nil {
				t.Errorf("close payload %x accepted with code %d", tc.payload, code)
			}
			continue
		}
		if err != nil || code != tc.wantCode {
			t.Errorf("close payload %x: %d, %v; want %d", tc.payload, code, err, tc.wantCode)
		}
	}
}

func TestTheReaderHoldsNothingBetweenWholeMessages(t *testing.T) {
	t.Parallel()
	r := &frameReader{maxMessage: 1 << 20}
	stream := append(text("first"), text("second")...)
	// A read that ends in the middle of the second frame keeps only that
	// frame's bytes; the next read completes it and the reader is empty.
	cut := len(text("first")) + 3
	got, err := collect(r, stream[:cut])
	if err != nil || len(got) != 1 || !r.buffered() || len(r.pending) != 3 {
		t.Fatalf("after a cut frame: %q, %v, %d bytes held", got, err, len(r.pending))
	}
	got, err = collect(r, stream[cut:])
	if err != nil || len(got) != 1 || got[0] != "1:second" || r.buffered() {
		t.Fatalf("after the rest: %q, %v, held %v", got, err, r.buffered())
	}
}

func TestAStoppedFeedKeepsTheRestInOrder(t *testing.T) {
	t.Parallel()
	r := &frameReader{maxMessage: 1 << 20}
	stream := bytes.Join([][]byte{text("a"), text("b"), text("c")}, nil)
	var got []string
	stopAfter := 1
	handle := func(m message) bool {
		got = append(got, string(m.payload))
		stopAfter--
		return stopAfter > 0
	}
	if err := r.feed(stream, handle); err != nil {
		t.Fatal(err)
	}
	if !r.buffered() || strings.Join(got, "") != "a" {
		t.Fatalf("stopped after %q, held %v", got, r.buffered())
	}
	stopAfter = 10
	if err := r.feed(nil, handle); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "") != "abc" || r.buffered() {
		t.Fatalf("after going on: %q, held %v", got, r.buffered())
	}
}

// FuzzFrameReader feeds arbitrary bytes whole and cut in two: the reader
// never panics and gives the same messages (or refuses) either way.
func FuzzFrameReader(f *testing.F) {
	f.Add(text(`{"op":"ping"}`), 3, false)
	f.Add(append(clientFrame(opText, []byte("ab")), clientFrame(finBit|opContinuation, []byte("cd"))...), 5, false)
	f.Add(clientFrame(finBit|rsv1Bit|opText, deflated([]byte("zip"))), 4, true)
	f.Add(clientFrame(finBit|opClose, []byte{3, 232, 'x'}), 1, false)
	f.Fuzz(func(t *testing.T, stream []byte, cut int, deflate bool) {
		whole := &frameReader{maxMessage: 4096, tooBig: "too big", deflate: deflate}
		wantMsgs, wantErr := collect(whole, stream)
		if cut < 0 {
			cut = -cut
		}
		if len(stream) > 0 {
			cut %= len(stream) + 1
		} else {
			cut = 0
		}
		parts := &frameReader{maxMessage: 4096, tooBig: "too big", deflate: deflate}
		gotMsgs, gotErr := collect(parts, stream[:cut], stream[cut:])
		if (wantErr == nil) != (gotErr == nil) || strings.Join(wantMsgs, "|") != strings.Join(gotMsgs, "|") {
			t.Fatalf("whole: %q, %v; cut at %d: %q, %v", wantMsgs, wantErr, cut, gotMsgs, gotErr)
		}
	})
}
