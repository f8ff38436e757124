package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/heraldrt/herald/internal/configfile"
	"github.com/heraldrt/herald/server"
)

const configUsage = `Usage: herald config check [serve flags] FILE

Validates FILE exactly as "herald serve --config FILE" would (with the
HERALD_* variables and the flags given), without opening the store or
listening. Prints the effective channel rules, the token vocabulary and the
settings that differ from the defaults; exits 1 listing every problem when
the configuration is not valid.
`

// cmdConfig implements `herald config check`.
func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return runConfigCheck(args[1:], os.LookupEnv, stdout, stderr)
		case "-h", "--help", "help":
			fmt.Fprint(stderr, configUsage)
			return flag.ErrHelp
		}
	}
	return errors.New(`want "herald config check FILE" (see herald config -h)`)
}

func runConfigCheck(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), configUsage+"\nFlags (those of herald serve):\n")
		fs.PrintDefaults()
	}
	flags := registerServeFlags(fs)
	// The file may come before, after or between the flags.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(files) > 1:
		return fmt.Errorf("one file at a time, not %q and %q", files[0], files[1])
	case len(files) == 1 && *flags.config != "":
		return errors.New("give the file once: as FILE or as --config")
	case len(files) == 1:
		*flags.config = files[0]
	}
	if *flags.config == "" {
		if v, _ := lookupEnv("HERALD_CONFIG"); v == "" {
			return errors.New("name the file: herald config check FILE")
		}
	}
	sc, err := resolveConfig(fs, flags, lookupEnv, peekDevCredentials)
	if err != nil {
		return err
	}
	return printEffectiveConfig(stdout, sc)
}

// peekDevCredentials is devCredentials for a check: it reads stored
// credentials but creates nothing; without them, serve would generate
// valid ones, so a check uses stand-ins.
func peekDevCredentials(dataDir string) (devKeys, error) {
	k, ok, err := readDevCredentials(dataDir)
	if err != nil || ok {
		return k, err
	}
	return devKeys{APIKey: "dev_" + strings.Repeat("0", 32), JWTSecret: strings.Repeat("0", 64)}, nil
}

// secretKeys are settings whose values a check does not print.
var secretKeys = map[string]bool{"api_key": true, "jwt_secret": true, "metrics_token": true}

// printEffectiveConfig prints what serve would run with: the token
// vocabulary, every rule with its defaults filled, and the settings that
// differ from the defaults, each with where it was set.
func printEffectiveConfig(w io.Writer, sc serveConfig) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s: valid\n", sc.configPath)

	roles, attrs := sc.server.TokenNames()
	fmt.Fprintln(tw, "\ntokens:")
	printVocabulary(tw, "roles", sc.server.Tokens.Roles, roles)
	printVocabulary(tw, "attrs", sc.server.Tokens.Attrs, attrs)

	rules := sc.server.EffectiveRules()
	switch {
	case len(rules) == 0 && sc.server.Dev:
		fmt.Fprintln(tw, "\nchannels: no rules; dev mode opens every channel to everyone")
	case len(rules) == 0:
		fmt.Fprintln(tw, "\nchannels: no rules; only the API key may use any channel")
	default:
		tail := "no match is denied"
		if sc.server.Dev {
			tail = "no match is open to everyone (dev mode)"
		}
		fmt.Fprintf(tw, "\nchannels: %d rules, the first match decides, %s\n", len(rules), tail)
	}
	for i, r := range rules {
		printRule(tw, i, r)
	}

	fmt.Fprintln(tw, "\nsettings that differ from the defaults:")
	var base fileConfig
	base.applyDefaults()
	defaults := make(map[string]string)
	for _, s := range configfile.Flatten(&base) {
		defaults[s.Key] = s.Value
	}
	n := 0
	for _, s := range configfile.Flatten(&sc.file) {
		if s.Value == defaults[s.Key] || strings.HasPrefix(s.Key, "tokens.") {
			continue
		}
		value := s.Value
		if secretKeys[s.Key] {
			value = "(hidden)"
		}
		from := "generated for dev mode"
		if o, _, ok := sc.sources.Origin(s.Key); ok {
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
