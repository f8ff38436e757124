package server

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers verified user tokens for a while, so that a client
// sending the same token with every request (a flood, or just a busy
// publisher) costs a map lookup, not a signature check. A token is kept
// until its expiry or tokenCacheTTL, whichever comes first; bans are
// checked on every use, not cached.
//
// It is keyed by the token's SHA-256, not the token: a key of fixed size
// holds no secret, and does not keep alive the request the token was cut
// from (a token in a query string is a piece of the request line, which
// a string key would hold for as long as the entry lives).
type tokenCache struct {
	mu sync.Mutex // guards m
	m  map[tokenKey]cachedToken
}

type tokenKey [sha256.Size]byte

type cachedToken struct {
	id    Identity
	until time.Time
}

const (
	tokenCacheTTL  = 5 * time.Minute
	tokenCacheSize = 10_000
)

func (c *tokenCache) get(tok string, now time.Time) (Identity, bool) {
	key := tokenKey(sha256.Sum256([]byte(tok)))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return Identity{}, false
	}
	if !now.Before(e.until) {
		delete(c.m, key)
		return Identity{}, false
	}
	return e.id, true
}

func (c *tokenCache) put(tok string, id Identity, now time.Time) {
	until := now.Add(tokenCacheTTL)
	if !id.Expires.IsZero() && id.Expires.Before(until) {
		until = id.Expires
	}
	key := tokenKey(sha256.Sum256([]byte(tok)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[tokenKey]cachedToken)
	}
	if len(c.m) >= tokenCacheSize {
		// Forget a tenth, the expired first; map order does the rest.
		n := 0
		for k, e := range c.m {
			if !now.Before(e.until) || n < tokenCacheSize/10 {
				delete(c.m, k)
				n++
			}
		}
	}
	c.m[key] = cachedToken{id: id, until: until}
}
