package server

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/heraldrt/herald/protocol"
)

// MaxChannelLen is the longest channel name, in bytes.
const MaxChannelLen = 255

// maxEventLen is the longest event name, in bytes.
const maxEventLen = 64

func isChannelByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("_.:@=/-", c) >= 0
}

func isEventByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '_' || c == '.' || c == ':' || c == '-'
}

// ValidateChannel checks a channel name: 1–255 characters from
// [A-Za-z0-9_.:@=/-]. The error names the first bad character and its
// position, so a client can fix its input.
func ValidateChannel(name string) error {
	if name == "" {
		return invalidf("channel name is empty")
	}
	if len(name) > MaxChannelLen {
		return invalidf("channel name is %d bytes long, the limit is %d", len(name), MaxChannelLen)
	}
	for i := 0; i < len(name); i++ {
		if !isChannelByte(name[i]) {
			return invalidf("channel name %s has the character %s at position %d; allowed are A-Z a-z 0-9 and _.:@=/-",
				quoteForMessage(name), describeRune(name[i:]), i+1)
		}
	}
	return nil
}

// validateEvent checks a publisher's event name and applies the default
// (protocol.DefaultEvent). Names starting with protocol.ReservedPrefix are
// the server's own.
func validateEvent(name string) (string, error) {
	if name == "" {
		return protocol.DefaultEvent, nil
	}
	if len(name) > maxEventLen {
		return "", invalidf("event name is %d bytes long, the limit is %d", len(name), maxEventLen)
	}
	for i := 0; i < len(name); i++ {
		if !isEventByte(name[i]) {
			return "", invalidf("event name %s has the character %s at position %d; allowed are A-Z a-z 0-9 and _.:-",
				quoteForMessage(name), describeRune(name[i:]), i+1)
		}
	}
	if strings.HasPrefix(name, protocol.ReservedPrefix) {
		return "", invalidf("event name %q is reserved: names starting with %q are the server's own", name, protocol.ReservedPrefix)
	}
	return name, nil
}

// describeRune names the first character of s for an error message,
// printing control and non-ASCII characters as Go escapes.
func describeRune(s string) string {
	r, _ := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError {
		return "byte " + strconv.Quote(s[:1])
	}
	return quoteForMessage(string(r))
}

// quoteForMessage quotes s for an error message, cut to a readable length.
func quoteForMessage(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}
