package server

import (
	"testing"
	"time"
)

func TestTokenCacheKeepsAVerifiedTokenUntilItsExpiry(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	var c tokenCache
	c.put("token-a", Identity{User: "ann", Expires: now.Add(time.Minute)}, now)
	c.put("token-b", Identity{User: "bob"}, now) // no expiry: tokenCacheTTL
	for _, tc := range []struct {
		tok  string
		at   time.Time
		user string // "" for a miss
	}{
		{"token-a", now, "ann"},
		{"token-b", now.Add(time.Minute), "bob"},
		{"token-c", now, ""},                           // never put
		{"token-a" + "x", now, ""},                     // another token
		{"token-b", now.Add(tokenCacheTTL - 1), "bob"}, // still kept
		{"token-a", now.Add(time.Minute), ""},          // expired
		{"token-b", now.Add(tokenCacheTTL), ""},        // the cache's own bound
	} {
		id, ok := c.get(tc.tok, tc.at)
		if ok != (tc.user != "") || id.User != tc.user {
			t.Errorf("get(%q, +%s) = %q, %v; want %q", tc.tok, tc.at.Sub(now), id.User, ok, tc.user)
		}
	}
}
