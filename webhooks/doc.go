// Package webhooks calls out to HTTP endpoints (n8n, Make, any receiver)
// when channel messages are stored and when life events happen: a durable
// outbox, signing, retries with backoff, a breaker per endpoint, dead
// letters and replay (DESIGN.md §6, "Webhooks out"). So far it holds the
// parts the others rely on: the signing, the endpoints' configuration
// (Config.Compile), the request bodies, default or from the endpoint's
// template (Endpoint.Render), and one signed attempt through the endpoint's breaker
// with its retry schedule (Sender, NextDelay). The outbox and the delivery
// loop come next; until then the server neither reads a webhooks: section
// nor calls out.
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
