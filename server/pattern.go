package server

// ChannelPattern is a channel pattern in the syntax of the channel rules
// (literal text, {name} captures, * for the rest), for the features
// beside the core that pick channels the way rules do, such as webhook
// endpoints. Its zero value matches nothing.
type ChannelPattern struct {
	p *pattern
}

// CompileChannelPattern parses src; the error names the problem and where
// it is in src.
func CompileChannelPattern(src string) (ChannelPattern, error) {
	p, err := compilePattern(src)
	if err != nil {
		return ChannelPattern{}, err
	}
	return ChannelPattern{p: p}, nil
}

// Match reports whether channel matches the pattern.
func (c ChannelPattern) Match(channel string) bool {
	if c.p == nil {
		return false
	}
	var caps captures
	return c.p.match(channel, &caps)
}

// String returns the pattern as written.
func (c ChannelPattern) String() string {
	if c.p == nil {
		return ""
	}
	return c.p.src
}
