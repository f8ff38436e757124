package configfile

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Addr    string        `yaml:"addr"`
	Dev     bool          `yaml:"dev"`
	Wait    time.Duration `yaml:"wait"`
	Rate    float64       `yaml:"rate"`
	History struct {
		Size *int          `yaml:"size"`
		TTL  time.Duration `yaml:"ttl"`
	} `yaml:"history"`
	Origins []string   `yaml:"origins"`
	Rules   []testRule `yaml:"rules"`
	Small   int8       `yaml:"small"`
	Tags    *[]string  `yaml:"tags"`
	Skipped string     `yaml:"-"`
}

type testRule struct {
	Name  string   `yaml:"name"`
	Allow []string `yaml:"allow"`
	Limit struct {
		Count int `yaml:"count"`
	} `yaml:"limit"`
}

func (r *testRule) ConfigLabel(key string) string {
	return fmt.Sprintf("%s (name %q)", key, r.Name)
}

func TestDecodeGoodFile(t *testing.T) {
	t.Parallel()
	var c testConfig
	src, probs := Decode("c.yaml", []byte(`
addr: ":8080"
dev: true
wait: 1m30s
rate: 2
history:
  size: 0
  ttl: 72h
origins: [a, b]
defaults: &defaults
rules:
  - name: one
    allow: &both [x, y]
  - <<: {name: base, limit: {count: 3}}
    name: two
    allow: *both
`), &c)
	// "defaults" is unknown: the one problem.
	if len(probs) != 1 || probs[0].String() != `c.yaml:10: unknown key "defaults" (the keys here are addr, dev, wait, rate, history, origins, rules, small, tags)` {
		t.Fatalf("problems %q", probs)
	}
	if c.Addr != ":8080" || !c.Dev || c.Wait != 90*time.Second || c.Rate != 2 ||
		c.History.Size == nil || *c.History.Size != 0 || c.History.TTL != 72*time.Hour ||
		!reflect.DeepEqual(c.Origins, []string{"a", "b"}) {
		t.Errorf("decoded %+v", c)
	}
	if len(c.Rules) != 2 || c.Rules[1].Name != "two" || c.Rules[1].Limit.Count != 3 || !reflect.DeepEqual(c.Rules[1].Allow, []string{"x", "y"}) {
		t.Errorf("rules %+v (a merged mapping, overridden by the rule's own keys; an alias)", c.Rules)
	}
	for key, line := range map[string]int{"addr": 2, "history.ttl": 8, "origins[1]": 9, "rules[1].name": 15, "rules[0].allow[1]": 13} {
		if o, _, ok := src.Origin(key); !ok || o.Line != line || o.File != "c.yaml" {
			t.Errorf("origin of %s = %+v, want c.yaml:%d", key, o, line)
		}
	}
	if o, at, ok := src.Origin("rules[0].limit.count"); !ok || at != "rules[0]" || o.Line != 12 {
		t.Errorf("an unwritten key is located at the nearest written one: %+v %s", o, at)
	}
	if src.IsSet("small") {
		t.Error("small was never written")
	}
}

func TestDecodeReportsEveryProblemWithItsLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"typo at the top", "histroy:\n  size: 3\n", []string{`c.yaml:1: unknown key "histroy" (did you mean "history"?)`}},
		{"typo nested", "history:\n  sise: 3\n", []string{`c.yaml:2: unknown key "history.sise" (did you mean "history.size"?)`}},
		{"nothing close", "history:\n  colour: red\n", []string{`c.yaml:2: unknown key "history.colour" (history has size, ttl)`}},
		{"bad duration", "wait: 15x\n", []string{`c.yaml:1: wait: "15x" is not a duration (write it like 15s, 2m or 24h)`}},
		{"number without a unit", "history:\n  ttl: 30\n", []string{`c.yaml:2: history.ttl: "30" is not a duration (write it like 15s, 2m or 24h)`}},
		{"word for a number", "history:\n  size: many\n", []string{`c.yaml:2: history.size: "many" is not a whole number`}},
		{"fraction for a whole number", "small: 1.5\n", []string{`c.yaml:1: small: "1.5" is not a whole number`}},
		{"overflow", "small: 300\n", []string{`c.yaml:1: small: "300" is too large`}},
		{"word for a float", "rate: fast\n", []string{`c.yaml:1: rate: "fast" is not a number`}},
		{"yes is not a bool", "dev: yes\n", []string{`c.yaml:1: dev: "yes" is not true or false`}},
		{"scalar for a list", "origins: a\n", []string{`c.yaml:1: origins: "a" is not a list (write [a])`}},
		{"list for a string", "addr: [a]\n", []string{`c.yaml:1: addr: a list is not a string`}},
		{"scalar for a mapping", "history: 5\n", []string{`c.yaml:1: history: "5" is not a mapping (its keys are size, ttl)`}},
		{"duplicate key", "addr: a\naddr: b\n", []string{`c.yaml:2: addr: set twice (first on line 1)`}},
		{"syntax", "addr: a\n  b: c\n", []string{`c.yaml:2: mapping values are not allowed in this context`}},
		{"labelled item", "rules:\n  - name: r1\n    alow: [x]\n    limit: {count: lots}\n",
			[]string{
				`c.yaml:3: rules[0] (name "r1"): unknown key "alow" (did you mean "allow"?)`,
				`c.yaml:4: rules[0] (name "r1"): limit.count: "lots" is not a whole number`,
			}},
		{"label from a later key", "rules:\n  - alow: [x]\n    name: late\n",
			[]string{`c.yaml:2: rules[0] (name "late"): unknown key "alow" (did you mean "allow"?)`}},
		{"every problem at once", "histroy: {}\nwait: 15x\nrules:\n  - name: a\n    limt: {}\ndev: maybe\n",
			[]string{
				`c.yaml:1: unknown key "histroy" (did you mean "history"?)`,
				`c.yaml:2: wait: "15x" is not a duration (write it like 15s, 2m or 24h)`,
				`c.yaml:5: rules[0] (name "a"): unknown key "limt" (did you mean "limit"?)`,
				`c.yaml:6: dev: "maybe" is not true or false`,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c testConfig
			_, probs := Decode("c.yaml", []byte(tc.yaml), &c)
			var got []string
			for _, p := range probs {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestDecodeStringMap: a mapping with free keys (a webhook's headers)
// decodes into a map[string]string, each value at its line; what is not
// such a mapping is a problem, not a panic.
func TestDecodeStringMap(t *testing.T) {
	t.Parallel()
	var c struct {
		Headers map[string]string `yaml:"headers"`
	}
	src, probs := Decode("c.yaml", []byte("headers:\n  x-api-key: k1\n  X-Team: \"3\"\n"), &c)
	if len(probs) != 0 || !reflect.DeepEqual(c.Headers, map[string]string{"x-api-key": "k1", "X-Team": "3"}) {
		t.Fatalf("decoded %v, problems %v", c.Headers, probs)
	}
	if o, _, ok := src.Origin("headers.X-Team"); !ok || o.Line != 3 {
		t.Errorf("origin of headers.X-Team = %+v, want line 3", o)
	}
	for body, want := range map[string]string{
		"headers: [a]\n":             `c.yaml:1: headers: a list is not a mapping (write it like {name: value})`,
		"headers:\n  a: [x]\n":       `c.yaml:2: headers.a: a list is not a string`,
		"headers:\n  a: 1\n  a: 2\n": `c.yaml:3: headers.a: set twice (first on line 2)`,
	} {
		c.Headers = nil
		_, probs := Decode("c.yaml", []byte(body), &c)
		if len(probs) != 1 || probs[0].String() != want {
			t.Errorf("%q: problems %q, want %q", body, probs, want)
		}
	}
}

func TestDecodeEmptyFile(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"", "\n# only a comment\n", "---\n"} {
		var c testConfig
		if _, probs := Decode("c.yaml", []byte(body), &c); len(probs) != 0 {
			t.Errorf("%q: %v", body, probs)
		}
	}
}

// keyed is a validation error about settings, as server.ConfigError is.
type keyed struct {
	keys []string
	msg  string
}

func (k *keyed) Error() string        { return k.msg }
func (k *keyed) ConfigKeys() []string { return k.keys }

func TestLocatePutsValidationErrorsWhereTheValueCameFrom(t *testing.T) {
	t.Parallel()
	var c testConfig
	src, probs := Decode("c.yaml", []byte("addr: x\nhistory:\n  size: many\n  ttl: -1h\norigins: [a, b]\n"), &c)
	if len(probs) != 1 {
		t.Fatalf("problems %v", probs)
	}
	src.Set("dev", Env("HERALD_DEV"))
	src.Set("origins", Flag("--origins")) // replaces the file's list
	err := errors.Join(
		&keyed{[]string{"addr"}, `addr "x": want host:port`},
		fmt.Errorf("wrapped: %w", &keyed{[]string{"history.ttl"}, "history.ttl -1h: must not be negative"}),
		&keyed{[]string{"history.size"}, "history.size 0: a consequence of the value that was reported"},
		errors.Join(&keyed{[]string{"origins[1]"}, `origins[1] "b": not an origin`}),
		&keyed{[]string{"dev"}, "dev mode needs a loopback address"},
		&keyed{[]string{"small", "addr"}, "small (0) must exceed addr"},
		&keyed{[]string{"history.unwritten", "addr"}, "history.unwritten (0) must exceed addr"},
		&keyed{[]string{"rate"}, "rate is required"},
		errors.New("no key at all"),
	)
	var got []string
	for _, p := range src.Locate(err).Sorted() {
		got = append(got, p.String())
	}
	want := []string{
		`c.yaml:1: addr "x": want host:port`,
		`c.yaml:1: small (0) must exceed addr`,             // at the first key the user set
		`c.yaml:1: history.unwritten (0) must exceed addr`, // not at history, around the default
		`c.yaml:4: wrapped: history.ttl -1h: must not be negative`,
		`--origins[1] "b": not an origin`,
		`HERALD_DEV mode needs a loopback address`,
		`rate is required`, // set by nobody: no place to show
		`no key at all`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("located\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenameKeyMatchesWholeKeysOnly(t *testing.T) {
	t.Parallel()
	cases := []struct{ msg, key, name, want string }{
		{"api_key is short", "api_key", "HERALD_API_KEY", "HERALD_API_KEY is short"},
		{`pprof_addr "x" and addr "y"`, "addr", "--addr", `pprof_addr "x" and --addr "y"`},
		{"sse.heartbeat 1ms: too short", "sse", "X", "sse.heartbeat 1ms: too short (set by X)"},
		{"must differ", "api_key", "HERALD_API_KEY", "must differ (set by HERALD_API_KEY)"},
	}
	for _, tc := range cases {
		if got := renameKey(tc.msg, tc.key, tc.name); got != tc.want {
			t.Errorf("renameKey(%q, %q) = %q, want %q", tc.msg, tc.key, got, tc.want)
		}
	}
}

// joinedKeyed is a KeyedError around several problems of one setting.
type joinedKeyed struct {
	keys []string
	err  error
}

func (k *joinedKeyed) Error() string        { return k.err.Error() }
func (k *joinedKeyed) Unwrap() error        { return k.err }
func (k *joinedKeyed) ConfigKeys() []string { return k.keys }

func TestLocateSplitsSeveralProblemsOfOneSetting(t *testing.T) {
	t.Parallel()
	var c testConfig
	src, _ := Decode("c.yaml", []byte("addr: keys.json\n"), &c)
	err := &joinedKeyed{[]string{"addr"}, errors.Join(errors.New("keys.json: key 0: bad"), errors.New("keys.json: key 1: bad"))}
	var got []string
	for _, p := range src.Locate(err) {
		got = append(got, p.String())
	}
	want := []string{"c.yaml:1: keys.json: key 0: bad", "c.yaml:1: keys.json: key 1: bad"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFlatten(t *testing.T) {
	t.Parallel()
	size := 5
	c := testConfig{Addr: ":80", Wait: 90 * time.Second, Rate: 0.5, Origins: []string{"a", "b"}, Rules: []testRule{{Name: "x"}}}
	c.History.Size = &size
	want := []Setting{
		{"addr", `":80"`}, {"dev", "false"}, {"wait", "1m30s"}, {"rate", "0.5"},
		{"history.size", "5"}, {"history.ttl", "0s"}, {"origins", `["a", "b"]`}, {"small", "0"},
	}
	if got := Flatten(&c); !reflect.DeepEqual(got, want) {
		t.Errorf("Flatten\n%q\nwant\n%q", got, want)
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0: "0s", 100 * time.Millisecond: "100ms", 90 * time.Second: "1m30s", time.Minute: "1m",
		72 * time.Hour: "72h", 25*time.Hour + time.Minute: "25h1m", time.Hour + time.Second: "1h0m1s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// backend is written either as a word or as a mapping, as the engine is.
type backend struct {
	Remote *struct {
		URL string `yaml:"url"`
	} `yaml:"remote"`
}

func (b *backend) DecodeScalar(word string) error {
	if word != "local" {
		return fmt.Errorf("backend %q: want local or a mapping {remote: {…}}", word)
	}
	*b = backend{}
	return nil
}

func TestScalarFormOrMapping(t *testing.T) {
	t.Parallel()
	type file struct {
		Backend backend `yaml:"backend"`
	}
	for _, tc := range []struct {
		yaml, remote, problem string
	}{
		{yaml: "backend: local\n"},
		{yaml: "backend: {remote: {url: nats://a}}\n", remote: "nats://a"},
		{yaml: "backend: elsewhere\n", problem: `c.yaml:1: backend: backend "elsewhere": want local or a mapping {remote: {…}}`},
		{yaml: "backend: {remot: {}}\n", problem: `did you mean "backend.remote"`},
	} {
		var f file
		_, probs := Decode("c.yaml", []byte(tc.yaml), &f)
		if tc.problem != "" {
			if len(probs) != 1 || !strings.Contains(probs[0].String(), tc.problem) {
				t.Errorf("%q: problems %v, want one with %q", tc.yaml, probs, tc.problem)
			}
			continue
		}
		if len(probs) != 0 {
			t.Errorf("%q: %v", tc.yaml, probs)
			continue
		}
		got := ""
		if f.Backend.Remote != nil {
			got = f.Backend.Remote.URL
		}
		if got != tc.remote {
			t.Errorf("%q: remote %q, want %q", tc.yaml, got, tc.remote)
		}
	}
}
