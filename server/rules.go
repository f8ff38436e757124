package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldrt/herald/store"
	"golang.org/x/time/rate"
)

// RuleConfig is one entry of the configuration's channels: list. Rules are
// tried in order; the first whose pattern matches a channel decides every
// action on it; a channel no rule matches is denied (DESIGN §5).
type RuleConfig struct {
	// Pattern: literal characters match themselves, {name} captures one or
	// more characters up to the next literal character of the pattern, and
	// a final * matches any rest, also an empty one.
	Pattern string `yaml:"pattern"`
	// Principals allowed each action. HistoryAccess and PresenceAccess
	// default to Subscribe when nil.
	Subscribe      []string `yaml:"subscribe"`
	Publish        []string `yaml:"publish"`
	HistoryAccess  []string `yaml:"history_access"`
	PresenceAccess []string `yaml:"presence_access"`

	// Presence keeps the channel's members (GET /api/presence, signals);
	// JoinLeave announces herald.join and herald.leave to the channel.
	Presence  bool `yaml:"presence"`
	JoinLeave bool `yaml:"join_leave"`
	// Status makes the channel hear herald.online / herald.offline when
	// one of its members comes online on the server or goes offline.
	Status         bool             `yaml:"status"`
	History        *RetentionConfig `yaml:"history"`
	RateLimit      *RateLimitConfig `yaml:"rate_limit"`
	Batch          *BatchConfig     `yaml:"batch"`
	MaxSubscribers int              `yaml:"max_subscribers"`
}

// ConfigLabel names the rule in configuration errors by its index and
// pattern: `channels[3] (pattern "chat_room_{id}")`.
func (c *RuleConfig) ConfigLabel(key string) string {
	if c.Pattern == "" {
		return key
	}
	return fmt.Sprintf("%s (pattern %q)", key, c.Pattern)
}

// RateLimitConfig allows Limit publishes per Window per user.
type RateLimitConfig struct {
	Limit  int           `yaml:"limit"`
	Window time.Duration `yaml:"window"`
}

// BatchConfig coalesces up to Size messages, holding none longer than
// Timeout.
type BatchConfig struct {
	Size    int           `yaml:"size"`
	Timeout time.Duration `yaml:"timeout"`
}

// maxCaptures bounds the {name} captures of one pattern, so matching
// needs no allocation.
const maxCaptures = 8

type segKind uint8

const (
	segLiteral segKind = iota
	segCapture
	segStar
)

type segment struct {
	kind segKind
	lit  string // segLiteral
	stop byte   // segCapture: the literal character that ends it; 0 at the end
}

// pattern is a compiled channel pattern.
type pattern struct {
	src      string
	segs     []segment
	captures []string // names, in order
}

type captures [maxCaptures]string

// compilePattern parses a rule pattern. Errors name the problem and its
// position.
func compilePattern(src string) (*pattern, error) {
	if src == "" {
		return nil, errors.New("pattern is empty")
	}
	p := &pattern{src: src}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '*':
			if i != len(src)-1 {
				return nil, fmt.Errorf("pattern %q: * may only end a pattern (found at position %d)", src, i+1)
			}
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == segCapture {
				return nil, fmt.Errorf("pattern %q: {%s} directly before * is ambiguous; put a literal character between them", src, p.captures[len(p.captures)-1])
			}
			p.segs = append(p.segs, segment{kind: segStar})
			i++
		case c == '{':
			end := strings.IndexByte(src[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("pattern %q: { at position %d is not closed", src, i+1)
			}
			name := src[i+1 : i+end]
			if err := checkCaptureName(name); err != nil {
				return nil, fmt.Errorf("pattern %q: %w", src, err)
			}
			for _, prev := range p.captures {
				if prev == name {
					return nil, fmt.Errorf("pattern %q: {%s} is captured twice", src, name)
				}
			}
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == segCapture {
				return nil, fmt.Errorf("pattern %q: {%s} directly after {%s} is ambiguous; put a literal character between them", src, name, p.captures[len(p.captures)-1])
			}
			if len(p.captures) == maxCaptures {
				return nil, fmt.Errorf("pattern %q: more than %d captures", src, maxCaptures)
			}
			p.captures = append(p.captures, name)
			p.segs = append(p.segs, segment{kind: segCapture})
			i += end + 1
		case c == '}':
			return nil, fmt.Errorf("pattern %q: } at position %d has no {", src, i+1)
		case isChannelByte(c):
			j := i
			for j < len(src) && isChannelByte(src[j]) {
				j++
			}
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == segCapture {
				p.segs[n-1].stop = src[i]
			}
			p.segs = append(p.segs, segment{kind: segLiteral, lit: src[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("pattern %q: character %s at position %d is not allowed in a channel name", src, describeRune(src[i:]), i+1)
		}
	}
	return p, nil
}

func checkCaptureName(name string) error {
	if name == "" {
		return errors.New("{} has no name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("{%s}: a capture name uses letters, digits and _", name)
		}
	}
	return nil
}

// match reports whether channel matches, filling caps with the captured
// values in order. It never backtracks: a capture ends at the first
// occurrence of the literal character that follows it.
func (p *pattern) match(channel string, caps *captures) bool {
	rest := channel
	n := 0
	for _, s := range p.segs {
		switch s.kind {
		case segLiteral:
			if !strings.HasPrefix(rest, s.lit) {
				return false
			}
			rest = rest[len(s.lit):]
		case segCapture:
			end := len(rest)
			if s.stop != 0 {
				end = strings.IndexByte(rest, s.stop)
				if end < 0 {
					return false
				}
			}
			if end == 0 {
				return false // captures one or more characters
			}
			caps[n] = rest[:end]
			n++
			rest = rest[end:]
		case segStar:
			return true
		}
	}
	return rest == ""
}

func (p *pattern) captureIndex(name string) int {
	for i, c := range p.captures {
		if c == name {
			return i
		}
	}
	return -1
}

type principalKind uint8

const (
	pSystem principalKind = iota
	pEveryone
	pAuthenticated
	pGrant
	pRole
	pUser
	pAttr
)

// template is a principal's value with {name} placeholders resolved to
// capture indexes; it is compared in pieces, never built, on the hot path.
type template struct {
	parts []tplPart
}

type tplPart struct {
	lit string
	cap int // capture index, or -1 for a literal part
}

func compileTemplate(src string, p *pattern) (template, error) {
	var t template
	for len(src) > 0 {
		open := strings.IndexByte(src, '{')
		if open < 0 {
			t.parts = append(t.parts, tplPart{lit: src, cap: -1})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, tplPart{lit: src[:open], cap: -1})
		}
		end := strings.IndexByte(src[open:], '}')
		if end < 0 {
			return template{}, fmt.Errorf("{ is not closed")
		}
		name := src[open+1 : open+end]
		idx := p.captureIndex(name)
		if idx < 0 {
			return template{}, fmt.Errorf("{%s} is not captured by the pattern %q", name, p.src)
		}
		t.parts = append(t.parts, tplPart{cap: idx})
		src = src[open+end+1:]
	}
	return t, nil
}

// equals reports whether the template, filled from caps, equals s.
func (t template) equals(s string, caps *captures) bool {
	for _, part := range t.parts {
		v := part.lit
		if part.cap >= 0 {
			v = caps[part.cap]
		}
		if !strings.HasPrefix(s, v) {
			return false
		}
		s = s[len(v):]
	}
	return s == ""
}

type principal struct {
	kind  principalKind
	key   string // the attribute of pAttr
	value template
}

// compilePrincipal parses one principal of a rule whose pattern is p (nil
// when the pattern is itself wrong: placeholders are then not checked).
// A name outside the declared vocabulary, or one that is almost a keyword
// or user:, is an error with the closest name.
func compilePrincipal(src string, p *pattern, vocab TokenVocabulary) (principal, error) {
	switch src {
	case "system":
		return principal{kind: pSystem}, nil
	case "everyone":
		return principal{kind: pEveryone}, nil
	case "authenticated":
		return principal{kind: pAuthenticated}, nil
	case "grant":
		return principal{kind: pGrant}, nil
	case "":
		return principal{}, errors.New("empty principal")
	}
	kind, key, value := pRole, "", src
	if k, v, ok := strings.Cut(src, ":"); ok {
		if k == "" || v == "" {
			return principal{}, fmt.Errorf("principal %q: want <attribute>:<value> or user:<id>", src)
		}
		kind, key, value = pAttr, k, v
		if k == "user" {
			kind, key = pUser, ""
		}
	}
	if err := vocab.checkPrincipal(src, kind, key, value); err != nil {
		return principal{}, err
	}
	if p == nil {
		return principal{kind: kind, key: key}, nil
	}
	t, err := compileTemplate(value, p)
	if err != nil {
		return principal{}, fmt.Errorf("principal %q: %w", src, err)
	}
	return principal{kind: kind, key: key, value: t}, nil
}

// rule is a compiled RuleConfig.
type rule struct {
	index     int
	pattern   *pattern
	actions   [numActions][]principal
	retention store.Retention
	cfg       RuleConfig
	// publishLimits are the rule's rate_limit buckets, per user and channel.
	publishLimits *limiterSet
}

// rules is the compiled channels: list.
type rules struct {
	list []*rule
	// dev opens the channels no rule matches (Config.Dev).
	dev bool
}

// channelRule is the rule a channel matched, with its captures. A request
// looks it up once and carries it through every decision about the
// channel: authorize, the limits, batching, presence.
type channelRule struct {
	channel string
	rule    *rule // nil: no rule matches
	caps    captures
}

// lookup matches channel against the rules, once.
func (rs *rules) lookup(channel string) channelRule {
	cr := channelRule{channel: channel}
	cr.rule = rs.match(channel, &cr.caps)
	return cr
}

// presence returns the presence options of a channel whose rule is r: the
// rule's, or, in dev mode on a channel no rule covers, presence without
// join/leave.
func (rs *rules) presence(r *rule) (on, joinLeave, status bool) {
	if r != nil {
		return r.cfg.Presence, r.cfg.JoinLeave, r.cfg.Status
	}
	return rs.dev, false, false
}

// compileRules compiles and checks every rule, reporting every problem
// as a *ConfigError that names the rule by its index and pattern.
func compileRules(cfgs []RuleConfig, defaultHistory store.Retention, vocab TokenVocabulary) (*rules, error) {
	rs := &rules{}
	var errs []error
	for i, c := range cfgs {
		r, rerrs := compileRule(i, c, defaultHistory, vocab)
		if len(rerrs) > 0 {
			errs = append(errs, rerrs...)
			continue
		}
		rs.list = append(rs.list, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rs, nil
}

// ruleLabel names rule i in messages: channels[3] (pattern "chat_{id}").
func ruleLabel(i int, pattern string) string {
	if pattern == "" {
		return fmt.Sprintf("channels[%d]", i)
	}
	return fmt.Sprintf("channels[%d] (pattern %q)", i, pattern)
}

// compileRule compiles rule index. Each problem is a *ConfigError keyed
// by the rule's setting (channels[3].publish[1]) whose message starts
// with the rule's label.
func compileRule(index int, c RuleConfig, defaultHistory store.Retention, vocab TokenVocabulary) (*rule, []error) {
	var errs []error
	label := ruleLabel(index, c.Pattern)
	bad := func(keys []string, err error) {
		for i, k := range keys {
			keys[i] = fmt.Sprintf("channels[%d]", index) + k
		}
		errs = append(errs, &ConfigError{Keys: keys, Err: fmt.Errorf("%s: %w", label, err)})
	}
	p, err := compilePattern(c.Pattern)
	switch {
	case c.Pattern == "":
		bad([]string{".pattern"}, errors.New("pattern is required"))
	case err != nil:
		// The message quotes the pattern already.
		errs = append(errs, &ConfigError{Keys: []string{fmt.Sprintf("channels[%d].pattern", index)}, Err: fmt.Errorf("%s: %w", ruleLabel(index, ""), err)})
	}
	r := &rule{index: index, pattern: p, cfg: c, retention: defaultHistory}
	lists := [numActions][]string{
		ActionSubscribe: c.Subscribe,
		ActionPublish:   c.Publish,
		ActionHistory:   c.HistoryAccess,
		ActionPresence:  c.PresenceAccess,
	}
	for a, list := range lists {
		for j, src := range list {
			pr, err := compilePrincipal(src, p, vocab)
			if err != nil {
				key := Action(a).configKey()
				bad([]string{fmt.Sprintf(".%s[%d]", key, j)}, fmt.Errorf("%s: %w", key, err))
				continue
			}
			r.actions[a] = append(r.actions[a], pr)
		}
	}
	// history_access and presence_access default to the subscribe list,
	// checked once, above.
	if lists[ActionHistory] == nil {
		r.actions[ActionHistory] = r.actions[ActionSubscribe]
	}
	if lists[ActionPresence] == nil {
		r.actions[ActionPresence] = r.actions[ActionSubscribe]
	}
	if c.JoinLeave && !c.Presence {
		bad([]string{".join_leave", ".presence"}, errors.New("join_leave needs presence: true"))
	}
	if c.Status && !c.Presence {
		bad([]string{".status", ".presence"}, errors.New("status needs presence: true"))
	}
	if h := c.History; h != nil {
		if h.Size != nil {
			if *h.Size < 0 || *h.Size > 1_000_000 {
				bad([]string{".history.size"}, fmt.Errorf("history.size %d: want 0 to 1000000", *h.Size))
			}
			r.retention.MaxCount = *h.Size
		}
		if h.TTL < 0 {
			bad([]string{".history.ttl"}, fmt.Errorf("history.ttl %s: must not be negative", h.TTL))
		} else if h.TTL > 0 {
			r.retention.MaxAge = h.TTL
		}
	}
	if rl := c.RateLimit; rl != nil {
		if rl.Limit <= 0 || rl.Window <= 0 {
			bad([]string{".rate_limit"}, fmt.Errorf("rate_limit {limit: %d, window: %s}: both must be positive", rl.Limit, rl.Window))
		} else {
			// A bucket of limit tokens refilled at limit per window: a burst
			// of the whole allowance, then the steady rate.
			r.publishLimits = newLimiterSet(rate.Limit(float64(rl.Limit)/rl.Window.Seconds()), rl.Limit, maxLimiterKeys)
		}
	}
	if b := c.Batch; b != nil {
		if b.Size < 1 || b.Size > 1000 {
			bad([]string{".batch.size"}, fmt.Errorf("batch.size %d: want 1 to 1000", b.Size))
		}
		if b.Timeout <= 0 || b.Timeout > 10*time.Second {
			bad([]string{".batch.timeout"}, fmt.Errorf("batch.timeout %s: want more than 0 and at most 10s", b.Timeout))
		}
	}
	if c.MaxSubscribers < 0 {
		bad([]string{".max_subscribers"}, fmt.Errorf("max_subscribers %d: must not be negative", c.MaxSubscribers))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

// match returns the first rule matching channel and its captures.
func (rs *rules) match(channel string, caps *captures) *rule {
	for _, r := range rs.list {
		if r.pattern.match(channel, caps) {
			return r
		}
	}
	return nil
}

// retention returns the retention of channel: its rule's, or def.
func (rs *rules) retention(channel string, def store.Retention) store.Retention {
	var caps captures
	if r := rs.match(channel, &caps); r != nil {
		return r.retention
	}
	return def
}
