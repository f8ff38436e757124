// Package webhooks calls out to HTTP endpoints (n8n, Make, any receiver)
// when channel messages are stored and when life events happen: a durable
// outbox, signing, retries with backoff, a breaker per endpoint, dead
// letters and replay (DESIGN.md §6, "Webhooks out").
//
// A message's outbox entries are written by the engine in the same commit
// as the message (Service.Route decides which endpoints take it), so a
// stored message never misses its webhook and no webhook reports a
// message that was not stored. Life events (connect, disconnect, join,
// leave, state, occupied, vacated) come from the core's observers, after
// its presence debounce, and are queued as they happen. One delivery loop
// per endpoint streams its queue from disk (a bounded window in memory),
// sends batches through the endpoint's breaker, retries with backoff and
// jitter for up to a day, and then moves what failed to the endpoint's
// dead letters, which the API replays.
//
// It is built beside the core, not inside it: it learns what happens from
// the core's observers and the store's commit, and it imports server and
// protocol, never a transport.
//
// Signing follows Standard Webhooks 1.0, which Make uses for its own
// events: every request carries webhook-id (stable across retries, what a
// receiver dedupes on), webhook-timestamp (Unix seconds) and
// webhook-signature, "v1," and the base64 HMAC-SHA256 of
// "id.timestamp.body" under the endpoint's secret. Secrets are written
// "whsec_" and the base64 of 24 to 64 random bytes. While a secret is
// rotated an endpoint has two, and every request carries both signatures,
// space-separated, so a receiver holding either one accepts it.
package webhooks
