package server

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/heraldrt/herald/internal/suggest"
)

// TokenVocabulary declares the roles and attributes that user tokens
// carry: the tokens: section of the configuration. A nil list is not
// declared; an empty one declares that there are none.
//
// It is checked against the channel rules at start-up, never against
// tokens: a token may carry other roles and attributes, which simply
// match no rule. Declared, a rule principal that names a role or
// attribute outside it stops start-up with the closest declared name, so
// a typo never turns into a rule that silently denies. Not declared, the
// rules may name any role or attribute, except names within two typos of
// a keyword or of user: (almost surely misspelt); the server then logs,
// once, the names the rules rely on, suggesting to declare them.
type TokenVocabulary struct {
	Roles []string `yaml:"roles"`
	Attrs []string `yaml:"attrs"`
}

// principalKeywords are the principals that are neither roles nor
// attributes.
var principalKeywords = []string{"system", "everyone", "authenticated", "grant"}

// check reports problems of the declaration itself and the presence
// attributes it does not declare.
func (v TokenVocabulary) check(presenceAttrs []string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Keys: []string{key}, Err: fmt.Errorf("%s %s", key, fmt.Sprintf(format, args...))})
	}
	for i, r := range v.Roles {
		key := fmt.Sprintf("tokens.roles[%d]", i)
		switch {
		case r == "":
			bad(key, "is empty")
		case slices.Contains(principalKeywords, r):
			bad(key, "%q is a keyword of the rules, not a role", r)
		case strings.ContainsAny(r, ":{}"):
			bad(key, "%q: a role is a name without :, { or }", r)
		case slices.Index(v.Roles, r) < i:
			bad(key, "%q is declared twice", r)
		}
	}
	for i, a := range v.Attrs {
		key := fmt.Sprintf("tokens.attrs[%d]", i)
		switch {
		case a == "":
			bad(key, "is empty")
		case a == "user":
			bad(key, "%q: user:<id> matches the token's sub; it is not an attribute", a)
		case strings.ContainsAny(a, ":{}"):
			bad(key, "%q: an attribute is a name without :, { or }", a)
		case slices.Index(v.Attrs, a) < i:
			bad(key, "%q is declared twice", a)
		}
	}
	if v.Attrs != nil {
		for i, a := range presenceAttrs {
			if !slices.Contains(v.Attrs, a) {
				bad(fmt.Sprintf("presence.attrs[%d]", i), "%q is not a declared attribute (tokens.attrs: %s)%s",
					a, listOrNone(v.Attrs), didYouMean(a, v.Attrs, func(s string) string { return s }))
			}
		}
	}
	return errs
}

// checkPrincipal checks a role or attribute principal against the
// vocabulary (kind pRole: value is the role; pAttr: key is the attribute).
func (v TokenVocabulary) checkPrincipal(src string, kind principalKind, key, value string) error {
	switch kind {
	case pRole:
		if v.Roles != nil {
			if slices.ContainsFunc(v.Roles, func(r string) bool { return templateMatches(value, r) }) {
				return nil
			}
			return fmt.Errorf("principal %q is not a declared role (tokens.roles: %s)%s", src, listOrNone(v.Roles),
				didYouMean(src, slices.Concat(v.Roles, principalKeywords), func(s string) string { return s }))
		}
		if kw, ok := nearKeyword(src, principalKeywords); ok {
			return fmt.Errorf("principal %q is almost the keyword %q (did you mean %q?); to name a role %q, declare it in tokens.roles", src, kw, kw, src)
		}
	case pAttr:
		withKey := func(k string) string { return k + ":" + value }
		if v.Attrs != nil {
			if slices.Contains(v.Attrs, key) {
				return nil
			}
			return fmt.Errorf("principal %q: %q is not a declared attribute (tokens.attrs: %s)%s", src, key, listOrNone(v.Attrs),
				didYouMean(key, slices.Concat(v.Attrs, []string{"user"}), withKey))
		}
		if _, ok := nearKeyword(key, []string{"user"}); ok {
			return fmt.Errorf("principal %q names the attribute %q (did you mean %q?); to match a token attribute %q, declare it in tokens.attrs", src, key, withKey("user"), key)
		}
	}
	return nil
}

// nearKeyword returns the keyword that word is a typo of: at most
// suggest.MaxDistance edits away.
func nearKeyword(word string, keywords []string) (string, bool) {
	for _, k := range keywords {
		if word != k && suggest.Distance(strings.ToLower(word), k) <= suggest.MaxDistance {
			return k, true
		}
	}
	return "", false
}

// didYouMean returns ` (did you mean "X"?)` with X the closest candidate
// to word, spelled by show, or "" when none is close.
func didYouMean(word string, candidates []string, show func(string) string) string {
	if best, ok := suggest.Closest(word, candidates); ok {
		return fmt.Sprintf(" (did you mean %q?)", show(best))
	}
	return ""
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// templateMatches reports whether name can be what template (a role with
// {placeholders}, each one or more characters) becomes.
func templateMatches(template, name string) bool {
	if !strings.Contains(template, "{") {
		return template == name
	}
	var re strings.Builder
	re.WriteString("^")
	for rest := template; rest != ""; {
		open := strings.IndexByte(rest, '{')
		end := strings.IndexByte(rest, '}')
		if open < 0 || end < open {
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		re.WriteString(regexp.QuoteMeta(rest[:open]) + ".+")
		rest = rest[end+1:]
	}
	re.WriteString("$")
	ok, err := regexp.MatchString(re.String(), name)
	return err == nil && ok
}

// TokenNames returns the roles and token attributes that the rules and
// presence.attrs name, each once, in the order they first appear; roles
// with placeholders are left out. It is what a tokens: section would
// declare.
func (c Config) TokenNames() (roles, attrs []string) {
	add := func(list []string, name string) []string {
		if !slices.Contains(list, name) {
			list = append(list, name)
		}
		return list
	}
	for _, r := range c.Rules {
		for _, list := range [][]string{r.Subscribe, r.Publish, r.HistoryAccess, r.PresenceAccess} {
			for _, src := range list {
				k, _, isAttr := strings.Cut(src, ":")
				switch {
				case src == "" || slices.Contains(principalKeywords, src):
				case isAttr && k != "" && k != "user":
					attrs = add(attrs, k)
				case !isAttr && !strings.Contains(src, "{"):
					roles = add(roles, src)
				}
			}
		}
	}
	for _, a := range c.Presence.Attrs {
		attrs = add(attrs, a)
	}
	return roles, attrs
}

// warnUndeclaredTokens logs, once at start-up, the roles and attributes
// the rules rely on that no tokens: section declares.
func (c Config) warnUndeclaredTokens() {
	roles, attrs := c.TokenNames()
	if c.Tokens.Roles != nil {
		roles = nil
	}
	if c.Tokens.Attrs != nil {
		attrs = nil
	}
	var args []any
	if len(roles) > 0 {
		args = append(args, "roles", roles)
	}
	if len(attrs) > 0 {
		args = append(args, "attrs", attrs)
	}
	if len(args) == 0 {
		return
	}
	c.Logger.Warn("the channel rules name token roles and attributes that no tokens: section declares; "+
		"declare them (tokens: {roles: [...], attrs: [...]}) so that a misspelt one stops start-up", args...)
}
