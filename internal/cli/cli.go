package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// Environment variables that give the flags of client commands their
// defaults.
const (
	EnvURL       = "HERALD_URL"        // --server
	EnvToken     = "HERALD_TOKEN"      // --token, first
	EnvAPIKey    = "HERALD_API_KEY"    // --token, second
	EnvJWTSecret = "HERALD_JWT_SECRET" // token minting

	// DefaultServerURL is --server when neither the flag nor $HERALD_URL
	// says.
	DefaultServerURL = "http://127.0.0.1:8080"
)

// NewFlagSet returns a command's flag set, writing its messages and usage
// ("Usage: herald SYNOPSIS" and the flags) to stderr.
func NewFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args and rejects positional arguments. flag.ErrHelp is
// returned as is.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (every option is a flag; see -h)", fs.Arg(0))
	}
	return nil
}

// StringList is a repeatable string flag.
type StringList []string

func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set appends v.
func (l *StringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// NewLineLogger returns a logger that writes each record as one line,
// "herald <command>: message key=value …", values quoted when they hold
// a space, a quote or an equals sign: Warn and up always, everything with
// verbose. A "transport" attribute is left out (the command's own flag).
func NewLineLogger(w io.Writer, command string, verbose bool) *slog.Logger {
	h := &lineHandler{w: w, prefix: "herald " + command + ": ", level: slog.LevelWarn}
	if verbose {
		h.level = slog.LevelDebug
	}
	return slog.New(h)
}

type lineHandler struct {
	w      io.Writer
	prefix string
	level  slog.Level
	attrs  []slog.Attr
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.prefix + r.Message)
	write := func(a slog.Attr) bool {
		if v := a.Value.String(); a.Key != "transport" {
			if v == "" || strings.ContainsAny(v, " \"=") {
				v = strconv.Quote(v)
			}
			b.WriteString(" " + a.Key + "=" + v)
		}
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *lineHandler) WithGroup(string) slog.Handler { return h }
