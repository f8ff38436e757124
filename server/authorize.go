package server

import "strings"

// Action is what an identity wants to do on a channel.
type Action int

const (
	ActionSubscribe Action = iota
	ActionPublish
	ActionHistory
	ActionPresence
	numActions
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

// phrase is the action as the verb of a sentence about a channel:
// "not allowed to <phrase> channel …".
func (a Action) phrase() string {
	switch a {
	case ActionSubscribe:
		return "subscribe to"
	case ActionPublish:
		return "publish to"
	case ActionHistory:
		return "read the history of"
	case ActionPresence:
		return "see the presence of"
	}
	return "use"
}

// configKey is the rule key that lists the principals of the action.
func (a Action) configKey() string {
	switch a {
	case ActionHistory:
		return "history_access"
	case ActionPresence:
		return "presence_access"
	}
	return a.String()
}

// parseAction parses an action name of the grants API.
func parseAction(s string) (Action, bool) {
	for a := Action(0); a < numActions; a++ {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}

// authorize is the one decision point for every request path: the API,
// SSE and every later transport ask it, with the channel's rule looked up
// once for the request. The API key may do anything. Otherwise the first
// rule matching the channel decides; no rule means denied (in dev mode:
// open). A denied request without credentials is a 401, with credentials
// a 403. Errors name the channel and the action, never the rule or anyone
// else.
func (s *Server) authorize(id Identity, action Action, cr *channelRule) error {
	if id.System {
		return nil
	}
	if isSystem, err := userChannelDecision(id, action, cr.channel); isSystem {
		return err
	}
	if r := cr.rule; r == nil {
		if s.rules.dev {
			return nil
		}
	} else {
		for i := range r.actions[action] {
			if allows(&r.actions[action][i], id, action, cr, s.grants.set) {
				return nil
			}
		}
	}
	return denied(id, action, cr.channel)
}

// denied is the refusal of action on channel: a 401 without credentials,
// else a 403. It names the channel and the action, never the rule.
func denied(id Identity, action Action, channel string) error {
	if id.Anonymous {
		return unauthorizedf("credentials are required to %s channel %q", action.phrase(), channel)
	}
	return forbiddenf(channel, "not allowed to %s channel %q", action.phrase(), channel)
}

// allows reports whether principal p covers id for action on the channel
// of cr; grants are the dynamic grants.
func allows(p *principal, id Identity, action Action, cr *channelRule, grants *grantSet) bool {
	channel, caps := cr.channel, &cr.caps
	switch p.kind {
	case pSystem:
		return id.System
	case pEveryone:
		return true
	case pAuthenticated:
		return !id.Anonymous
	case pGrant:
		return !id.Anonymous && (claimsChannel(id.Channels, channel) || grants.allows(id.User, channel, action))
	case pRole:
		for _, role := range id.Roles {
			if p.value.equals(role, caps) {
				return true
			}
		}
	case pUser:
		return !id.Anonymous && id.User != "" && p.value.equals(id.User, caps)
	case pAttr:
		for _, v := range id.Attrs[p.key] {
			if p.value.equals(v, caps) {
				return true
			}
		}
	}
	return false
}

// claimsChannel reports whether a token's channels claim covers channel:
// an exact name, or a prefix ending in *.
func claimsChannel(patterns []string, channel string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(channel, prefix) {
				return true
			}
		} else if p == channel {
			return true
		}
	}
	return false
}
