// Package servertest runs a real Herald core — server.Open on an
// in-memory store — with its HTTP API (server/httpapi) behind an httptest
// server, for the tests of the transports: no mocks, a real core, a
// random loopback port.
package servertest
