package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"

	"github.com/heraldrt/herald/store"
)

// Session ids name one client identity across its connections: the id a
// client gets in herald.connected (SSE), the connected push (WebSocket) or
// a poll answer survives its reconnects, because the client brings it back
// — in the cursor (SSE's Last-Event-ID, a poll's cursor) or as the session
// it passes (WebSocket ?session=, a poll's session). A message published
// with exclude_session stores the id, and a replay to that id skips it, so
// a client that reconnects from before the message still never gets it.
//
// An id proves who it belongs to: it is 10 random bytes and a MAC, under a
// key kept in the store, of the owner and those bytes. So the server can
// tell whether a session id is the caller's own without remembering every
// session that ever existed, the same after a restart, and its answer says
// nothing about which sessions exist: an unknown id and another user's id
// fail the same check.
//
//	s_ base32( random(10) | HMAC-SHA256(key, owner | random)[:10] )
//
// The owner is "k" for the API key, "a" for anonymous clients and "u:" and
// the user id for a user.

const (
	sessionRandLen = 10
	sessionMACLen  = 10
	// sessionIDLen is the length of a session id: "s_" and 32 base32
	// characters.
	sessionIDLen = 2 + (sessionRandLen+sessionMACLen)*8/5
	// sessionKeyState is where the MAC key lives in the store's small
	// state; created on the first start, kept across restarts.
	sessionKeyState = "session_key"
	sessionKeyLen   = 32
)

var sessionIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// sessionIDs mints and checks session ids. Read-only after New.
type sessionIDs struct {
	key []byte
}

// stateCreator is an engine shared by several nodes (JetStream): it
// stores a key's first value only, and says which value won.
type stateCreator interface {
	CreateState(ctx context.Context, key string, value []byte) ([]byte, error)
}

// loadSessionIDs reads the MAC key from st, creating it on first use.
func loadSessionIDs(ctx context.Context, st store.Engine) (sessionIDs, error) {
	key, ok, err := st.GetState(ctx, sessionKeyState)
	if err != nil {
		return sessionIDs{}, fmt.Errorf("load session key: %w", err)
	}
	if ok && len(key) == sessionKeyLen {
		return sessionIDs{key: key}, nil
	}
	key = make([]byte, sessionKeyLen)
	_, _ = rand.Read(key) // never fails (crypto/rand documents it)
	if c, isCreator := st.(stateCreator); isCreator && !ok {
		// Nodes of a cluster starting at once agree on the first key.
		if key, err = c.CreateState(ctx, sessionKeyState, key); err != nil {
			return sessionIDs{}, fmt.Errorf("store session key: %w", err)
		}
		return sessionIDs{key: key}, nil
	}
	if err := st.PutState(ctx, sessionKeyState, key); err != nil {
		return sessionIDs{}, fmt.Errorf("store session key: %w", err)
	}
	return sessionIDs{key: key}, nil
}

// owner is the MAC's owner field for id.
func sessionOwner(id Identity) string {
	switch {
	case id.System:
		return "k"
	case id.Anonymous || id.User == "":
		return "a"
	}
	return "u:" + id.User
}

func (s sessionIDs) mac(owner string, random []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(owner))
	m.Write([]byte{0})
	m.Write(random)
	return m.Sum(nil)[:sessionMACLen]
}

// mint returns a new session id owned by id.
func (s sessionIDs) mint(id Identity) string {
	var b [sessionRandLen + sessionMACLen]byte
	_, _ = rand.Read(b[:sessionRandLen])
	copy(b[sessionRandLen:], s.mac(sessionOwner(id), b[:sessionRandLen]))
	return "s_" + sessionIDEncoding.EncodeToString(b[:])
}

// owns reports whether session is an id minted for id's owner. It looks
// at nothing but the id, so it answers the same whether or not the
// session is open.
func (s sessionIDs) owns(id Identity, session string) bool {
	b, ok := decodeSessionID(session)
	if !ok {
		return false
	}
	return hmac.Equal(b[sessionRandLen:], s.mac(sessionOwner(id), b[:sessionRandLen]))
}

// decodeSessionID returns the bytes of a well-formed session id.
func decodeSessionID(session string) ([]byte, bool) {
	if len(session) != sessionIDLen || session[:2] != "s_" {
		return nil, false
	}
	b, err := sessionIDEncoding.DecodeString(session[2:])
	if err != nil || len(b) != sessionRandLen+sessionMACLen {
		return nil, false
	}
	return b, true
}

// wellFormedSessionID reports whether s has the shape of a session id.
func wellFormedSessionID(s string) bool {
	_, ok := decodeSessionID(s)
	return ok
}
