package ws

import "testing"

// FuzzDecodeRequest feeds any frame to the op decoder: it never panics, a
// frame it takes has an op, and one it refuses gets a message naming the
// problem.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"subscribe","id":"1","channel":"chat_room_7","since":12,"epoch":"3f9a"}`,
		`{"op":"publish","id":2,"channel":"a","event":"e","data":{"text":"hi"},"exclude_self":true}`,
		`{"op":"unsubscribe","channel":"a"}`,
		`{"op":"auth","token":"x.y.z"}`,
		`{"op":"signal","channel":"a","data":{"typing":true},"ttl":5}`,
		`{"op":"ping"}`,
		`{"op":"history","channel":"a","since":0,"limit":10}`,
		`{"op":"presence","channel":"a"}`,
		`[]`, `"op"`, `{"op":1}`, `{"op":"x"}{"op":"y"}`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, err := decodeRequest(frame)
		if err == nil && req.Op == "" {
			t.Fatalf("%q taken without an op", frame)
		}
		if err != nil && err.Error() == "" {
			t.Fatalf("%q refused without a message", frame)
		}
	})
}
