package datasync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// template is a text with {column} placeholders.
type template struct {
	src   string
	parts []part
}

// part is literal text, or a column when column is set.
type part struct {
	text   string
	column string
}

// parseTemplate splits src into literals and {column} placeholders; a
// placeholder names a column ([a-z_][a-z0-9_$]*).
func parseTemplate(src string) (template, error) {
	t := template{src: src}
	rest := src
	for {
		loc := placeholderRE.FindStringSubmatchIndex(rest)
		if loc == nil {
			break
		}
		if loc[0] > 0 {
			t.parts = append(t.parts, part{text: rest[:loc[0]]})
		}
		col := rest[loc[2]:loc[3]]
		if !columnRE.MatchString(col) {
			return template{}, fmt.Errorf("{%s}: a placeholder names a column (lower-case letters, digits, _ and $)", col)
		}
		t.parts = append(t.parts, part{column: col})
		rest = rest[loc[1]:]
	}
	if strings.ContainsAny(rest, "{}") {
		return template{}, fmt.Errorf("unbalanced { or } in %q", src)
	}
	if rest != "" {
		t.parts = append(t.parts, part{text: rest})
	}
	return t, nil
}

// columns lists the columns the template names.
func (t template) columns() []string {
	var out []string
	for _, p := range t.parts {
		if p.column != "" {
			out = append(out, p.column)
		}
	}
	return out
}

// text fills the placeholders with the row's values as text: a string's
// characters, a number or a boolean as written. A null, missing or
// structured value is an error naming the column.
func (t template) text(row map[string]json.RawMessage) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.column == "" {
			b.WriteString(p.text)
			continue
		}
		s, err := columnText(row, p.column)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// value renders a data value: a template that is one placeholder gives
// the column's JSON value as it is; any other gives a JSON string.
func (t template) value(row map[string]json.RawMessage) (json.RawMessage, error) {
	if len(t.parts) == 1 && t.parts[0].column != "" {
		v, ok := row[t.parts[0].column]
		if !ok {
			return nil, fmt.Errorf("the row has no column %q", t.parts[0].column)
		}
		return v, nil
	}
	s, err := t.text(row)
	if err != nil {
		return nil, err
	}
	return appendString(nil, s), nil
}

func columnText(row map[string]json.RawMessage, col string) (string, error) {
	v, ok := row[col]
	if !ok {
		return "", fmt.Errorf("the row has no column %q", col)
	}
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0 || string(v) == "null":
		return "", fmt.Errorf("column %q is null", col)
	case v[0] == '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("column %q: %w", col, err)
		}
		return s, nil
	case v[0] == '{' || v[0] == '[':
		return "", fmt.Errorf("column %q holds %s, not a value a name can hold", col, map[byte]string{'{': "an object", '[': "a list"}[v[0]])
	}
	return string(v), nil
}
