package app

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/heraldrt/herald/internal/configfile"
	"github.com/heraldrt/herald/server"
)

// secretKeys are settings whose values a check does not print.
var secretKeys = map[string]bool{"api_key": true, "jwt_secret": true, "metrics_token": true}

// WriteReport prints what serve would run with: the token
// vocabulary, every rule with its defaults filled, and the settings that
// differ from the defaults, each with where it was set.
func (l *Loaded) WriteReport(w io.Writer) error {
	c := l.Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	name := l.File
	if name == "" {
		name = "the configuration (no file)"
	}
	fmt.Fprintf(tw, "%s: valid\n", name)

	roles, attrs := c.Server.TokenNames()
	fmt.Fprintln(tw, "\ntokens:")
	printVocabulary(tw, "roles", c.Server.Tokens.Roles, roles)
	printVocabulary(tw, "attrs", c.Server.Tokens.Attrs, attrs)

	rules := c.Server.EffectiveRules()
	switch {
	case len(rules) == 0 && c.Server.Dev:
		fmt.Fprintln(tw, "\nchannels: no rules; dev mode opens every channel to everyone")
	case len(rules) == 0:
		fmt.Fprintln(tw, "\nchannels: no rules; only the API key may use any channel")
	default:
		tail := "no match is denied"
		if c.Server.Dev {
			tail = "no match is open to everyone (dev mode)"
		}
		fmt.Fprintf(tw, "\nchannels: %d rules, the first match decides, %s\n", len(rules), tail)
	}
	for i, r := range rules {
		printRule(tw, i, r)
	}

	printWebhooks(tw, c)

	fmt.Fprintln(tw, "\nsettings that differ from the defaults:")
	base := Config{}.WithDefaults()
	defaults := make(map[string]string)
	for _, s := range configfile.Flatten(&base) {
		defaults[s.Key] = s.Value
	}
	n := 0
	effective := c.WithDefaults()
	for _, s := range configfile.Flatten(&effective) {
		if s.Value == defaults[s.Key] || strings.HasPrefix(s.Key, "tokens.") {
			continue
		}
		value := s.Value
		if secretKeys[s.Key] {
			value = "(hidden)"
		}
		from := "generated for dev mode"
		if !secretKeys[s.Key] {
			from = "dev mode's default"
		}
		if o, _, ok := l.Sources.Origin(s.Key); ok {
			from = o.String()
		}
		fmt.Fprintf(tw, "  %s: %s\t# %s\n", s.Key, value, from)
		n++
	}
	if n == 0 {
		fmt.Fprintln(tw, "  none")
	}
	return tw.Flush()
}

// printVocabulary prints the declared names of one kind, or says which
// names the rules use without declaring them.
func printVocabulary(w io.Writer, kind string, declared, used []string) {
	switch {
	case declared != nil:
		fmt.Fprintf(w, "  %s:\t%s\t# declared\n", kind, principalList(declared, "none"))
	case len(used) > 0:
		fmt.Fprintf(w, "  %s:\t%s\t# not declared: declare them under tokens.%s so a misspelt one stops start-up\n", kind, strings.Join(used, ", "), kind)
	default:
		fmt.Fprintf(w, "  %s:\tnone used\n", kind)
	}
}

func printRule(w io.Writer, i int, r server.RuleConfig) {
	fmt.Fprintf(w, "  channels[%d] %q\n", i, r.Pattern)
	for _, a := range []struct {
		key  string
		list []string
	}{
		{"subscribe", r.Subscribe}, {"publish", r.Publish},
		{"history_access", r.HistoryAccess}, {"presence_access", r.PresenceAccess},
	} {
		fmt.Fprintf(w, "    %s:\t%s\n", a.key, principalList(a.list, "only the API key"))
	}
	if h := r.History; h != nil {
		fmt.Fprintf(w, "    history:\tsize %d, ttl %s\n", *h.Size, configfile.FormatDuration(h.TTL))
	}
	var opts []string
	for _, o := range []struct {
		name string
		on   bool
	}{{"presence", r.Presence}, {"join_leave", r.JoinLeave}, {"status", r.Status}} {
		if o.on {
			opts = append(opts, o.name)
		}
	}
	if len(opts) > 0 {
		fmt.Fprintf(w, "    options:\t%s\n", strings.Join(opts, ", "))
	}
	if rl := r.RateLimit; rl != nil {
		fmt.Fprintf(w, "    rate_limit:\t%d publishes per %s per user\n", rl.Limit, configfile.FormatDuration(rl.Window))
	}
	if b := r.Batch; b != nil {
		fmt.Fprintf(w, "    batch:\tup to %d messages, none held longer than %s\n", b.Size, configfile.FormatDuration(b.Timeout))
	}
	if r.MaxSubscribers > 0 {
		fmt.Fprintf(w, "    max_subscribers:\t%d\n", r.MaxSubscribers)
	}
}

func principalList(list []string, empty string) string {
	if len(list) == 0 {
		return empty
	}
	return strings.Join(list, ", ")
}

// printWebhooks lists the endpoints with their defaults filled; secrets
// are never printed.
func printWebhooks(w io.Writer, c Config) {
	eps, err := c.Webhooks.Compile(c.env())
	if err != nil || len(eps) == 0 {
		return
	}
	fmt.Fprintf(w, "\nwebhooks: %d endpoints\n", len(eps))
	for i, e := range eps {
		fmt.Fprintf(w, "  webhooks[%d] %q\t%s\n", i, e.Name, e.URLParsed.Redacted())
		fmt.Fprintf(w, "    events:\t%s\n", strings.Join(e.Events, ", "))
		if len(e.Channels) > 0 {
			fmt.Fprintf(w, "    channels:\t%s\n", strings.Join(e.Channels, ", "))
		}
		if len(e.MessageEvents) > 0 {
			fmt.Fprintf(w, "    message_events:\t%s\n", strings.Join(e.MessageEvents, ", "))
		}
		secret := fmt.Sprintf("%d (hidden)", len(e.Keys))
		if e.SecretEnv != "" {
			secret += " from $" + e.SecretEnv
		}
		fmt.Fprintf(w, "    secrets:\t%s\n", secret)
		delivery := fmt.Sprintf("up to %d in flight", e.Parallel)
		if e.Ordered {
			delivery = "ordered, one in flight"
		}
		fmt.Fprintf(w, "    delivery:\t%s, batches of %d (wait %s), timeout %s\n", delivery, e.Batch.Size,
			configfile.FormatDuration(e.Batch.Timeout), configfile.FormatDuration(e.Timeout))
		fmt.Fprintf(w, "    retry:\tfrom %s doubling to %s, for %s; outbox %d\n", configfile.FormatDuration(e.Retry.Initial),
			configfile.FormatDuration(e.Retry.Max), configfile.FormatDuration(e.Retry.For), e.OutboxSize)
	}
}
