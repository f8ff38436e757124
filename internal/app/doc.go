// Package app is Herald's composition root: one Config — every section
// declared once, next to the options it fills (server.Config,
// store.Options, the transports' Options) — loaded from the YAML file,
// HERALD_* variables and flags, and one App that builds the engine, the
// core, the HTTP API and the transports from it, starts them in order and
// stops them in the reverse order.
//
// `herald serve` and `herald config check` are thin wrappers over Load
// and New; an in-process server for a test or an example is New with a
// Config built in code.
//
// It may import every Herald package; nothing imports it but cmd/herald
// and tests.
package app
