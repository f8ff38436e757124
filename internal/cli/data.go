package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/client"
)

const (
	// maxStdinData bounds --data - (the server's body limit is far lower).
	maxStdinData = 16 << 20
	// CountPlaceholder is replaced by the message number in a DataTemplate.
	CountPlaceholder = "{{i}}"
)

// DataTemplate is a --data value: JSON, possibly with {{i}} for the
// message number of `herald publish --count`.
type DataTemplate string

// ReadData returns the --data value s, or, for "-", what stdin holds.
func ReadData(s string, stdin io.Reader) (DataTemplate, error) {
	if s != "-" {
		return DataTemplate(s), nil
	}
	b, err := io.ReadAll(io.LimitReader(stdin, maxStdinData+1))
	if err != nil {
		return "", fmt.Errorf("read --data from stdin: %w", err)
	}
	if len(b) > maxStdinData {
		return "", fmt.Errorf("--data from stdin is over %d bytes", maxStdinData)
	}
	return DataTemplate(b), nil
}

// Expand returns the data of message i (1-based), checked and compacted.
// A bare word is an error, not a string: quoting it silently would hide
// typos like {text:"hi"}.
func (d DataTemplate) Expand(i int) (json.RawMessage, error) {
	s := strings.TrimSpace(Number(string(d), i))
	if s == "" {
		return nil, errors.New("--data is empty; give a JSON value (null, 42, \"text\", {...})")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		hint := ""
		if s[0] != '{' && s[0] != '[' && s[0] != '"' {
			hint = fmt.Sprintf(" (to send a string, quote it: --data '%s')", strconv.Quote(s))
		}
		return nil, fmt.Errorf("--data is not valid JSON: %v%s", err, hint)
	}
	return buf.Bytes(), nil
}

// Number replaces {{i}} in s by i.
func Number(s string, i int) string {
	return strings.ReplaceAll(s, CountPlaceholder, strconv.Itoa(i))
}

// ResumeHint says how `herald subscribe` resumes where a subscription
// stopped: the cursor, else the per-channel positions it has.
func ResumeHint(cursor string, positions map[string]client.Position, channels []string) string {
	if cursor != "" {
		return "resume with --cursor " + cursor
	}
	if len(positions) == 0 {
		return "no position to resume from yet"
	}
	var since, eps []string
	for _, ch := range channels {
		s, e := "", ""
		if p, ok := positions[ch]; ok {
			s, e = strconv.FormatUint(p.Offset, 10), p.Epoch
		}
		since = append(since, "--since "+strconv.Quote(s))
		eps = append(eps, "--epoch "+strconv.Quote(e))
	}
	return "resume with " + strings.Join(since, " ") + " " + strings.Join(eps, " ")
}
