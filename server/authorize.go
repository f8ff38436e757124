package server

// Action is what an identity wants to do on a channel.
type Action int

const (
	ActionSubscribe Action = iota
	ActionPublish
	ActionHistory
	ActionPresence
)

func (a Action) String() string {
	switch a {
	case ActionSubscribe:
		return "subscribe"
	case ActionPublish:
		return "publish"
	case ActionHistory:
		return "history"
	case ActionPresence:
		return "presence"
	}
	return "unknown"
}

// authorize is the one decision point for every request path: API,
// SSE, and every later transport ask it. The API key may do anything; in
// dev mode every channel is open; otherwise, until channel rules exist,
// nothing is open.
func (s *Server) authorize(id Identity, action Action, channel string) error {
	if id.System || s.cfg.Dev {
		return nil
	}
	if id.Anonymous {
		return unauthorizedf("credentials are required to %s channel %q", action, channel)
	}
	return forbiddenf(channel, "not allowed to %s channel %q", action, channel)
}
