package main

import (
	"fmt"
	"time"

	"github.com/heraldrt/herald/server"
)

// ruleFile is one rule of the channels: list as the YAML file spells it.
type ruleFile struct {
	Pattern        string         `yaml:"pattern"`
	Subscribe      []string       `yaml:"subscribe"`
	Publish        []string       `yaml:"publish"`
	HistoryAccess  []string       `yaml:"history_access"`
	PresenceAccess []string       `yaml:"presence_access"`
	Presence       bool           `yaml:"presence"`
	JoinLeave      bool           `yaml:"join_leave"`
	Status         bool           `yaml:"status"`
	History        *historyRule   `yaml:"history"`
	RateLimit      *rateLimitRule `yaml:"rate_limit"`
	Batch          *batchRule     `yaml:"batch"`
	MaxSubscribers int            `yaml:"max_subscribers"`
}

type historyRule struct {
	Size *int          `yaml:"size"`
	TTL  time.Duration `yaml:"ttl"`
}

type rateLimitRule struct {
	Limit  int           `yaml:"limit"`
	Window time.Duration `yaml:"window"`
}

type batchRule struct {
	Size    int           `yaml:"size"`
	Timeout time.Duration `yaml:"timeout"`
}

// ConfigLabel names the rule in configuration errors as the core does:
// by its index and pattern (key is "channels[3]").
func (rf *ruleFile) ConfigLabel(key string) string {
	if rf.Pattern == "" {
		return key
	}
	return fmt.Sprintf("%s (pattern %q)", key, rf.Pattern)
}

func rulesOf(rfs []ruleFile) []server.RuleConfig {
	out := make([]server.RuleConfig, len(rfs))
	for i, rf := range rfs {
		out[i] = rf.config()
	}
	return out
}

func (rf ruleFile) config() server.RuleConfig {
	c := server.RuleConfig{
		Pattern:        rf.Pattern,
		Subscribe:      rf.Subscribe,
		Publish:        rf.Publish,
		HistoryAccess:  rf.HistoryAccess,
		PresenceAccess: rf.PresenceAccess,
		Presence:       rf.Presence,
		JoinLeave:      rf.JoinLeave,
		Status:         rf.Status,
		MaxSubscribers: rf.MaxSubscribers,
	}
	if h := rf.History; h != nil {
		c.History = &server.HistoryConfig{Size: h.Size, TTL: h.TTL}
	}
	if r := rf.RateLimit; r != nil {
		c.RateLimit = &server.RateLimitConfig{Limit: r.Limit, Window: r.Window}
	}
	if b := rf.Batch; b != nil {
		c.Batch = &server.BatchConfig{Size: b.Size, Timeout: b.Timeout}
	}
	return c
}
