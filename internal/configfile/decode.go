package configfile

import (
	"encoding"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldrt/herald/internal/suggest"
)

// Labeler is implemented (on the pointer) by a struct that is better
// named in messages by its content than by its key, such as a channel
// rule by its index and pattern: `channels[2] (pattern "chat_{id}")`.
// Problems inside it are then reported as "LABEL: key: what is wrong".
type Labeler interface {
	ConfigLabel(key string) string
}

// ScalarForm is implemented (on the pointer) by a struct that may also be
// written as a single word, such as `engine: badger` for an engine
// section whose other form is a mapping (`engine: {nats: {…}}`).
// DecodeScalar sets the struct from the word or says why it cannot.
type ScalarForm interface {
	DecodeScalar(word string) error
}

var (
	scalarFormType      = reflect.TypeFor[ScalarForm]()
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	labelerType         = reflect.TypeFor[Labeler]()
	// yamlLine finds the line in the YAML parser's errors
	// ("yaml: line 3: mapping values are not allowed in this context").
	yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// Decode decodes data, the YAML file named file, into dst (a pointer to
// a struct whose fields have yaml tags). Time durations are written as
// "15s", "2m", "24h". It returns where each key was set, and every
// problem found; dst holds every value that could be decoded.
func Decode(file string, data []byte, dst any) (*Sources, Problems) {
	d := &decoder{file: file, src: NewSources()}
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("configfile.Decode: want a pointer to a struct, got %T", dst))
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		p := Problem{File: file, Message: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Message = m[2]
		}
		return d.src, Problems{p}
	}
	n := &root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return d.src, nil
		}
		n = n.Content[0]
	}
	if n.Kind == 0 || isNull(n) {
		return d.src, nil // an empty file: every default
	}
	d.decode(n, v.Elem(), place{})
	return d.src, d.problems
}

type decoder struct {
	file     string
	src      *Sources
	problems Problems
	// quiet decodes a scratch copy (to label a struct by its content):
	// nothing is recorded or reported.
	quiet bool
}

// place is where a value is: path is its full key ("channels[0].history.ttl"),
// for Sources; messages show prefix and rel instead
// (`channels[0] (pattern "a"): ` and "history.ttl").
type place struct {
	path   string
	prefix string
	rel    string
}

func (p place) child(key string) place {
	return place{path: joinKey(p.path, key), prefix: p.prefix, rel: joinKey(p.rel, key)}
}

func (p place) item(i int) place {
	s := fmt.Sprintf("[%d]", i)
	return place{path: p.path + s, prefix: p.prefix, rel: p.rel + s}
}

// where is the place as a message starts it: "sse.heartbeat: ",
// `channels[0] (pattern "a"): history.ttl: `, or the bare prefix.
func (p place) where() string {
	if p.rel == "" {
		return p.prefix
	}
	return p.prefix + p.rel + ": "
}

func joinKey(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func (d *decoder) record(p place, line int) {
	if !d.quiet {
		d.src.origins[p.path] = Origin{File: d.file, Line: line}
	}
}

// fail reports a problem at n and marks the key as broken.
func (d *decoder) fail(n *yaml.Node, p place, format string, args ...any) {
	if d.quiet {
		return
	}
	d.src.broken[p.path] = true
	d.problems = append(d.problems, Problem{File: d.file, Line: n.Line, Message: p.where() + fmt.Sprintf(format, args...)})
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names a node's value for a message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, p place) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return // no value: the default
	}
	if reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, p, "%s is not a single value", describe(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.fail(n, p, "%v", err)
		}
		return
	}
	if n.Kind == yaml.ScalarNode && reflect.PointerTo(v.Type()).Implements(scalarFormType) {
		if err := v.Addr().Interface().(ScalarForm).DecodeScalar(n.Value); err != nil {
			d.fail(n, p, "%v", err)
		}
		return
	}
	if v.Type() == durationType {
		dur, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(n, p, "%s is not a duration (write it like 15s, 2m or 24h)", describe(n))
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		d.decode(n, nv.Elem(), p)
		v.Set(nv)
	case reflect.Struct:
		d.mapping(n, v, p)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			hint := ""
			if n.Kind == yaml.ScalarNode {
				hint = fmt.Sprintf(" (write [%s])", n.Value)
			}
			d.fail(n, p, "%s is not a list%s", describe(n), hint)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ip := p.item(i)
			d.record(ip, item.Line)
			d.decode(item, s.Index(i), ip)
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, p, "%s is not a string", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.fail(n, p, "%s is not true or false", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
			d.fail(n, p, "%s is not a whole number", describe(n))
			return
		}
		if v.OverflowInt(i) {
			d.fail(n, p, "%s is too large", describe(n))
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			d.fail(n, p, "%s is not a number", describe(n))
			return
		}
		v.SetFloat(f)
	case reflect.Map:
		d.stringMap(n, v, p)
	default:
		panic(fmt.Sprintf("configfile: cannot decode into %s (%s)", v.Type(), p.path))
	}
}

// stringMap decodes a mapping whose keys are free (a webhook's headers)
// into a map keyed by string.
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, p place) {
	if v.Type().Key().Kind() != reflect.String {
		panic(fmt.Sprintf("configfile: cannot decode into %s (%s)", v.Type(), p.path))
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, p, "%s is not a mapping (write it like {name: value})", describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := make(map[string]int) // key → line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			d.fail(k, p, "a key must be a word, not %s", describe(k))
			continue
		}
		kp := p.child(k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k, kp, "set twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.record(kp, k.Line)
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, kp)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

// field is a settable struct field and its key. index is the field's
// path from the struct being decoded: several steps when it is reached
// through an inline struct.
type field struct {
	key   string
	index []int
}

// fieldsOf returns the fields of a struct type that have a yaml key, in
// order. The fields of a struct field tagged `yaml:",inline"` count as the
// struct's own: a configuration composes the options of several packages
// into one mapping that way. Two fields with one key are a programming
// error.
func fieldsOf(t reflect.Type) []field {
	var fs []field
	for i := range t.NumField() {
		f := t.Field(i)
		key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "-" {
			continue
		}
		if key == "" && opts == "inline" && f.Type.Kind() == reflect.Struct {
			for _, in := range fieldsOf(f.Type) {
				fs = append(fs, field{key: in.key, index: append([]int{i}, in.index...)})
			}
			continue
		}
		if key == "" {
			continue
		}
		fs = append(fs, field{key: key, index: []int{i}})
	}
	seen := make(map[string]bool, len(fs))
	for _, f := range fs {
		if seen[f.key] {
			panic(fmt.Sprintf("configfile: %s declares the key %q twice", t, f.key))
		}
		seen[f.key] = true
	}
	return fs
}

func keysOf(fs []field) []string {
	keys := make([]string, len(fs))
	for i, f := range fs {
		keys[i] = f.key
	}
	return keys
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, p place) {
	fs := fieldsOf(v.Type())
	if n.Kind != yaml.MappingNode {
		d.fail(n, p, "%s is not a mapping (its keys are %s)", describe(n), strings.Join(keysOf(fs), ", "))
		return
	}
	if !d.quiet && reflect.PointerTo(v.Type()).Implements(labelerType) {
		// Name it by its content: decode a scratch copy first.
		scratch := reflect.New(v.Type())
		(&decoder{file: d.file, src: NewSources(), quiet: true}).pairs(n, scratch.Elem(), p, fs)
		label := scratch.Interface().(Labeler).ConfigLabel(p.path)
		p = place{path: p.path, prefix: label + ": "}
	}
	d.pairs(n, v, p, fs)
}

// pairs decodes the keys of mapping n into v: first the mappings merged
// in with "<<", then the mapping's own keys, which override them.
func (d *decoder) pairs(n *yaml.Node, v reflect.Value, p place, fs []field) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Tag == "!!merge" {
			d.merge(n.Content[i+1], v, p, fs)
		}
	}
	seen := make(map[string]int) // key → line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, p, "a key must be a word, not %s", describe(k))
			continue
		}
		kp := p.child(k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k, kp, "set twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		var idx []int
		for _, f := range fs {
			if f.key == k.Value {
				idx = f.index
			}
		}
		if idx == nil {
			d.unknown(k, p, fs)
			continue
		}
		d.record(kp, k.Line)
		d.decode(val, v.FieldByIndex(idx), kp)
	}
}

// merge decodes a YAML merge ("<<: *defaults"): a mapping or a list of
// mappings.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, p place, fs []field) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		d.pairs(n, v, p, fs)
	case yaml.SequenceNode:
		for _, m := range n.Content {
			d.merge(m, v, p, fs)
		}
	default:
		d.fail(n, p, "<< merges a mapping, not %s", describe(n))
	}
}

// unknown reports key k, which the mapping at p does not have, with the
// closest known key, or else every known key.
func (d *decoder) unknown(k *yaml.Node, p place, fs []field) {
	if d.quiet {
		return
	}
	keys := keysOf(fs)
	var msg string
	if best, ok := suggest.Closest(k.Value, keys); ok {
		msg = fmt.Sprintf("unknown key %q (did you mean %q?)", joinKey(p.rel, k.Value), joinKey(p.rel, best))
	} else if p.rel != "" {
		msg = fmt.Sprintf("unknown key %q (%s has %s)", joinKey(p.rel, k.Value), p.rel, strings.Join(keys, ", "))
	} else {
		msg = fmt.Sprintf("unknown key %q (the keys here are %s)", k.Value, strings.Join(keys, ", "))
	}
	d.problems = append(d.problems, Problem{File: d.file, Line: k.Line, Message: p.prefix + msg})
}
