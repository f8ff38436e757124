package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldrt/herald/server"
)

// ruleList is the channels: list of the configuration file. It is decoded
// by hand so that an unknown option names the rule's index, its line and
// the options there are.
type ruleList struct {
	rules []server.RuleConfig
}

// ruleFile is one rule as the YAML file spells it.
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
	Size *int     `yaml:"size"`
	TTL  duration `yaml:"ttl"`
}

type rateLimitRule struct {
	Limit  int      `yaml:"limit"`
	Window duration `yaml:"window"`
}

type batchRule struct {
	Size    int      `yaml:"size"`
	Timeout duration `yaml:"timeout"`
}

// ruleKeys are the options a rule may have, for the unknown-option error.
func ruleKeys() []string {
	return []string{"pattern", "subscribe", "publish", "history_access", "presence_access",
		"presence", "join_leave", "status", "history", "rate_limit", "batch", "max_subscribers"}
}

func (l *ruleList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: channels must be a list of rules", n.Line)
	}
	var errs []string
	keys := ruleKeys()
	for i, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Sprintf("channels[%d] (line %d): a rule is a mapping with a pattern", i, item.Line))
			continue
		}
		for k := 0; k+1 < len(item.Content); k += 2 {
			key := item.Content[k]
			if !slices.Contains(keys, key.Value) {
				errs = append(errs, fmt.Sprintf("channels[%d] (line %d): unknown option %q; a rule has %s",
					i, key.Line, key.Value, strings.Join(keys, ", ")))
			}
		}
		var rf ruleFile
		if err := item.Decode(&rf); err != nil {
			errs = append(errs, fmt.Sprintf("channels[%d]: %v", i, err))
			continue
		}
		if rf.Pattern == "" {
			errs = append(errs, fmt.Sprintf("channels[%d] (line %d): pattern is required", i, item.Line))
		}
		l.rules = append(l.rules, rf.config())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
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
		c.History = &server.HistoryConfig{Size: h.Size, TTL: time.Duration(h.TTL)}
	}
	if r := rf.RateLimit; r != nil {
		c.RateLimit = &server.RateLimitConfig{Limit: r.Limit, Window: time.Duration(r.Window)}
	}
	if b := rf.Batch; b != nil {
		c.Batch = &server.BatchConfig{Size: b.Size, Timeout: time.Duration(b.Timeout)}
	}
	return c
}
