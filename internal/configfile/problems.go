package configfile

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Origin is where a setting's value came from: a line of the file, or a
// flag or environment variable (Name). The zero Origin is a default.
type Origin struct {
	File string
	Line int
	// Name is the flag (--addr) or environment variable (HERALD_ADDR)
	// that set the value.
	Name string
}

// Flag is the origin of a value given by a command-line flag, spelled as
// the user types it: "--addr".
func Flag(name string) Origin { return Origin{Name: name} }

// Env is the origin of a value given by an environment variable.
func Env(name string) Origin { return Origin{Name: name} }

// String says where the value came from: "herald.yaml:7", "--addr",
// or "default".
func (o Origin) String() string {
	switch {
	case o.File != "":
		return fmt.Sprintf("%s:%d", o.File, o.Line)
	case o.Name != "":
		return o.Name
	}
	return "default"
}

// Problem is one thing wrong with the configuration. File and Line are
// set when the problem is at a line of the file.
type Problem struct {
	File    string
	Line    int
	Message string
}

// String is the problem as printed: "FILE:LINE: message" when it is in
// the file, else the message (which names the flag or variable).
func (p Problem) String() string {
	switch {
	case p.File != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
	case p.File != "":
		return p.File + ": " + p.Message
	}
	return p.Message
}

// Problems are every problem of a configuration. As an error it is one
// problem a line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Sorted returns the problems in the file first, by line, then the
// others in the order they were found.
func (ps Problems) Sorted() Problems {
	out := slices.Clone(ps)
	slices.SortStableFunc(out, func(a, b Problem) int {
		switch {
		case a.File != "" && b.File != "":
			return a.Line - b.Line
		case a.File != "":
			return -1
		case b.File != "":
			return 1
		}
		return 0
	})
	return out
}

// Sources records where every setting came from, by key as the file
// spells it ("addr", "history.ttl", "channels[2].publish[0]"), so that a
// validation error found later can be shown at the line, flag or
// variable that set the value.
type Sources struct {
	origins map[string]Origin
	// broken are keys whose value could not be decoded: it has been
	// reported, so what follows from it (a default left in its place) is
	// not reported again.
	broken map[string]bool
}

// NewSources returns empty Sources, for a configuration without a file.
func NewSources() *Sources {
	return &Sources{origins: make(map[string]Origin), broken: make(map[string]bool)}
}

// Set records that o set key, replacing what the file said about key
// and everything under it: a flag that sets a list replaces the whole
// list of the file.
func (s *Sources) Set(key string, o Origin) {
	for k := range s.origins {
		if within(k, key) {
			delete(s.origins, k)
		}
	}
	for k := range s.broken {
		if within(k, key) {
			delete(s.broken, k)
		}
	}
	s.origins[key] = o
}

// Origin returns where key's value came from: its own origin, else that
// of the nearest key around it (channels[2] for channels[2].publish when
// the rule was written on one line). at is the key found.
func (s *Sources) Origin(key string) (o Origin, at string, ok bool) {
	for k := key; k != ""; k = parentKey(k) {
		if o, ok := s.origins[k]; ok {
			return o, k, true
		}
	}
	return Origin{}, "", false
}

// IsSet reports whether key (or a key around it) was given by the file,
// a flag or a variable.
func (s *Sources) IsSet(key string) bool {
	_, _, ok := s.Origin(key)
	return ok
}

func (s *Sources) isBroken(key string) bool {
	for k := key; k != ""; k = parentKey(k) {
		if s.broken[k] {
			return true
		}
	}
	return false
}

// KeyedError is implemented by validation errors that know the settings
// they are about (server.ConfigError). Keys are spelled as in the file;
// the first one that was set locates the error.
type KeyedError interface {
	error
	ConfigKeys() []string
}

// Locate turns a validation error into problems: one per error joined in
// it (errors.Join), each at the file line of the first of its keys that
// was set (else of the nearest key around it that was), or with the key
// in its message replaced by the flag or variable that set it. An error about a value that could not be decoded
// (already reported, so the value is a default) is dropped.
func (s *Sources) Locate(err error) Problems {
	var ps Problems
	for _, l := range leaves(err, nil) {
		p := Problem{Message: l.err.Error()}
		keys := l.keys
		var ke KeyedError
		if keys == nil && errors.As(l.err, &ke) {
			keys = ke.ConfigKeys()
		}
		if slices.ContainsFunc(keys, s.isBroken) {
			continue
		}
		if o, at, ok := s.locate(keys); ok {
			if o.File != "" {
				p.File, p.Line = o.File, o.Line
			} else {
				p.Message = renameKey(p.Message, at, o.Name)
			}
		}
		ps = append(ps, p)
	}
	return ps
}

// locate returns the origin of the first key that was set itself, else
// that of the nearest key around the first key that has one: a default
// is not blamed when a value the user wrote takes part in the error.
func (s *Sources) locate(keys []string) (Origin, string, bool) {
	for _, k := range keys {
		if o, ok := s.origins[k]; ok {
			return o, k, true
		}
	}
	for _, k := range keys {
		if o, at, ok := s.Origin(k); ok {
			return o, at, true
		}
	}
	return Origin{}, "", false
}

// leaf is one error of a joined tree, with the keys of the KeyedError
// around it (nil when there is none).
type leaf struct {
	err  error
	keys []string
}

// leaves returns the errors joined in err, recursively; a KeyedError that
// wraps joined errors (several problems of one setting) gives each its
// keys.
func leaves(err error, keys []string) []leaf {
	if err == nil {
		return nil
	}
	if ke, ok := err.(KeyedError); ok {
		if inner := errors.Unwrap(ke); inner != nil {
			if _, joined := inner.(interface{ Unwrap() []error }); joined {
				return leaves(inner, ke.ConfigKeys())
			}
		}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []leaf
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e, keys)...)
		}
		return out
	}
	return []leaf{{err: err, keys: keys}}
}

// renameKey replaces the first whole occurrence of key in msg by name
// ("api_key is 10 characters long" → "HERALD_API_KEY is 10 characters
// long"), or, when msg does not spell the key, says who set it.
func renameKey(msg, key, name string) string {
	for from := 0; from < len(msg); {
		i := strings.Index(msg[from:], key)
		if i < 0 {
			break
		}
		i += from
		end := i + len(key)
		if (i == 0 || !isKeyByte(msg[i-1])) && (end == len(msg) || !isKeyByte(msg[end]) && msg[end] != '.') {
			return msg[:i] + name + msg[end:]
		}
		from = i + 1
	}
	return msg + " (set by " + name + ")"
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// parentKey returns the key around k: "a.b" for "a.b.c" and for "a.b[2]";
// "" at the top.
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// within reports whether k is key or a key under it.
func within(k, key string) bool {
	return k == key || strings.HasPrefix(k, key) && (k[len(key)] == '.' || k[len(key)] == '[')
}
