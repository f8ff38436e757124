package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/server"
)

// ParseAttrs turns KEY=VALUE pairs into the attrs claim: a key given once
// maps to a string, a key given several times to the list of its values
// (in order, without repeats).
func ParseAttrs(pairs []string) (map[string]any, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	lists := make(map[string][]string, len(pairs))
	var order []string
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--attr %q: want KEY=VALUE, e.g. --attr team=3", p)
		case k == "":
			return nil, fmt.Errorf("--attr %q: the key is empty; want KEY=VALUE", p)
		case v == "":
			return nil, fmt.Errorf("--attr %q: the value is empty; want KEY=VALUE", p)
		}
		if _, seen := lists[k]; !seen {
			order = append(order, k)
		}
		dup := false
		for _, x := range lists[k] {
			dup = dup || x == v
		}
		if !dup {
			lists[k] = append(lists[k], v)
		}
	}
	out := make(map[string]any, len(lists))
	for _, k := range order {
		if vs := lists[k]; len(vs) == 1 {
			out[k] = vs[0]
		} else {
			out[k] = vs
		}
	}
	return out, nil
}

// Token is a user token to mint: what `herald token`'s flags say.
type Token struct {
	Secret   string
	Sub      string
	Roles    []string
	Attrs    map[string]any
	Channels []string
	// TTL is the token's lifetime (exp = now + TTL); 0 for none.
	TTL time.Duration
}

// Mint signs t as an HS256 user token issued at now.
func (t Token) Mint(now time.Time) (string, error) {
	c := server.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: t.Sub, IssuedAt: jwt.NewNumericDate(now)},
		Roles:            t.Roles,
		Attrs:            t.Attrs,
		Channels:         t.Channels,
	}
	if t.TTL > 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(t.TTL))
	}
	tok, err := server.MintToken(t.Secret, c)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok, nil
}
