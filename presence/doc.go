// Package presence keeps who is in which channel, who is online, and the
// short-lived state members set (typing…). It knows nothing of transports,
// stores or Herald's server: it is told that sessions join and leave, and
// it answers with the events that follow.
//
// Time is explicit: every method takes now, and Advance(now) fires what is
// due — leaves held back by the grace period, states past their time to
// live. The caller drives Advance from one timer set to Next, so tests walk
// time step by step and nothing here starts a goroutine.
//
// A user with several sessions in a channel (two tabs, a phone) is one
// member, who leaves when the last session has been gone for the grace
// period: a quick reconnect produces no leave/join pair. The same holds for
// online status across the whole server.
//
// Memory is bounded by what is connected: a member exists while one of its
// sessions does (plus the grace period), a channel while it has members.
// All methods are safe for concurrent use.
package presence
