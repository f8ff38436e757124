package server

import (
	"sync"
	"time"
)

// tokenCache remembers verified user tokens for a while, so that a client
// sending the same token with every request (a flood, or just a busy
// publisher) costs a map lookup, not a signature check. A token is kept
// until its expiry or tokenCacheTTL, whichever comes first; bans are
// checked on every use, not cached.
type tokenCache struct {
	mu sync.Mutex // guards m
	m  map[string]cachedToken
}

type cachedToken struct {
	id    Identity
	until time.Time
}

const (
	tokenCacheTTL  = 5 * time.Minute
	tokenCacheSize = 10_000
)

func (c *tokenCache) get(tok string, now time.Time) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[tok]
	if !ok {
		return Identity{}, false
	}
	if !now.Before(e.until) {
		delete(c.m, tok)
		return Identity{}, false
	}
	return e.id, true
}

func (c *tokenCache) put(tok string, id Identity, now time.Time) {
	until := now.Add(tokenCacheTTL)
	if !id.Expires.IsZero() && id.Expires.Before(until) {
		until = id.Expires
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedToken)
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
	c.m[tok] = cachedToken{id: id, until: until}
}
