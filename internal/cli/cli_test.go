package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestLineLogger(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	log := NewLineLogger(&b, "subscribe", false).With("transport", "ws")
	log.Debug("hidden")
	log.Warn("reconnecting", "in", 100*time.Millisecond, "err", errors.New(`server answered 503: "down"`), "empty", "")
	NewLineLogger(&b, "subscribe", true).Debug("connected", "session", "s_1")
	want := `herald subscribe: reconnecting in=100ms err="server answered 503: \"down\"" empty=""` + "\n" +
		"herald subscribe: connected session=s_1\n"
	if b.String() != want {
		t.Errorf("log:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	var usage bytes.Buffer
	fs := NewFlagSet("x", "x --name N", &usage)
	var names StringList
	fs.Var(&names, "name", "a name; repeat")
	if err := Parse(fs, []string{"--name", "a", "--name", "b"}); err != nil || names.String() != "a,b" {
		t.Errorf("names %q, err %v", names.String(), err)
	}
	if err := Parse(NewFlagSet("x", "x", io.Discard), []string{"stray"}); err == nil || !strings.Contains(err.Error(), `unexpected argument "stray"`) {
		t.Errorf("a positional argument: %v", err)
	}
	if err := Parse(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) || !strings.HasPrefix(usage.String(), "Usage: herald x --name N") {
		t.Errorf("-h: %v, usage %q", err, usage.String())
	}
}
