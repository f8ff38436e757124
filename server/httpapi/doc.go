// Package httpapi is Herald's HTTP server API (DESIGN §4): the /api/*
// routes a backend or a client calls to publish, read history, list
// channels, query presence, signal, manage grants, broadcast and
// moderate; /metrics, /healthz and /readyz; the router's JSON 404 and 405
// answers; and CORS for browsers on the allowed origins.
//
// It owns the HTTP side of these — reading and checking requests (a
// strict JSON body under the size limit, query parameters), writing JSON
// answers — and nothing else: every decision (identity, permission,
// limits, validation of what a request asks) is the core's, reached
// through the exported operations of *server.Server and the types it
// hands out (Grants, Moderation). It keeps the metrics the core reports
// as life events (sessions opened and closed, moderation), as an
// observer of the core.
//
// Imports: server (the core) and the standard library, httprouter and
// the Prometheus client; never a transport, and no transport imports it.
// Errors are answered with server.WriteError, the one function the
// transports answer theirs with too.
package httpapi
