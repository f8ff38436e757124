package configfile

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// level is a setting with its own text form, as store.Durability is.
type level int

func (l *level) UnmarshalText(b []byte) error {
	switch string(b) {
	case "low":
		*l = 1
	case "high":
		*l = 2
	default:
		return fmt.Errorf("level %q: want low or high", b)
	}
	return nil
}

func (l level) MarshalText() ([]byte, error) {
	return []byte(map[level]string{1: "low", 2: "high"}[l]), nil
}

// Two packages' options composed into one file: the core's inline, a
// transport's under its own key.
type coreOptions struct {
	APIKey string `yaml:"api_key"`
	Level  level  `yaml:"level"`
	Limits struct {
		MaxData int      `yaml:"max_data"`
		Origins []string `yaml:"origins"`
	} `yaml:"limits"`
}

type transportOptions struct {
	Heartbeat time.Duration `yaml:"heartbeat"`
}

type composed struct {
	Addr      string           `yaml:"addr"`
	Core      coreOptions      `yaml:",inline"`
	Transport transportOptions `yaml:"sse"`
}

func TestInlineOptionsAndTextValues(t *testing.T) {
	t.Parallel()
	var c composed
	src, probs := Decode("c.yaml", []byte("addr: x\napi_key: k\nlevel: high\nlimits: {max_data: 5}\nsse: {heartbeat: 2s}\n"), &c)
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	if c.Addr != "x" || c.Core.APIKey != "k" || c.Core.Level != 2 || c.Core.Limits.MaxData != 5 || c.Transport.Heartbeat != 2*time.Second {
		t.Fatalf("decoded %+v", c)
	}
	if o, _, _ := src.Origin("limits.max_data"); o.Line != 4 {
		t.Fatalf("limits.max_data set at %v, want line 4", o)
	}
	_, probs = Decode("c.yaml", []byte("apikey: k\nlevel: medium\n"), &c)
	want := []string{
		`c.yaml:1: unknown key "apikey" (did you mean "api_key"?)`,
		`c.yaml:2: level: level "medium": want low or high`,
	}
	if got := strings.Split(probs.Error(), "\n"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", probs, strings.Join(want, "\n"))
	}
	found := map[string]string{}
	for _, s := range Flatten(&c) {
		found[s.Key] = s.Value
	}
	if found["api_key"] != `"k"` || found["limits.max_data"] != "5" || found["sse.heartbeat"] != "2s" {
		t.Fatalf("flattened %v", found)
	}
}

func TestSetStringByKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key, text string
		check     func(composed) bool
		err       string
	}{
		{"addr", ":9090", func(c composed) bool { return c.Addr == ":9090" }, ""},
		{"api_key", "secret", func(c composed) bool { return c.Core.APIKey == "secret" }, ""},
		{"level", "low", func(c composed) bool { return c.Core.Level == 1 }, ""},
		{"level", "loud", nil, `level "loud": want low or high`},
		{"limits.max_data", "7", func(c composed) bool { return c.Core.Limits.MaxData == 7 }, ""},
		{"limits.max_data", "seven", nil, `"seven" is not a whole number`},
		{"limits.origins", "https://a, https://b,", func(c composed) bool {
			return fmt.Sprint(c.Core.Limits.Origins) == "[https://a https://b]"
		}, ""},
		{"sse.heartbeat", "3s", func(c composed) bool { return c.Transport.Heartbeat == 3*time.Second }, ""},
		{"sse.heartbeat", "3", nil, `"3" is not a duration`},
	} {
		var c composed
		err := SetString(&c, tc.key, tc.text)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s=%s: %v, want %q", tc.key, tc.text, err, tc.err)
			}
		case err != nil || !tc.check(c):
			t.Errorf("%s=%s: %v, got %+v", tc.key, tc.text, err, c)
		}
	}
}

func TestAKeyDeclaredTwiceIsAProgrammingError(t *testing.T) {
	t.Parallel()
	type twice struct {
		Core  coreOptions `yaml:",inline"`
		Again coreOptions `yaml:",inline"`
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), `"api_key" twice`) {
			t.Fatalf("recovered %v, want a panic naming the key", r)
		}
	}()
	var c twice
	Decode("c.yaml", []byte("api_key: k\n"), &c)
}
