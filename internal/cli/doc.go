// Package cli is what the commands of the herald binary share, so that
// cmd/herald keeps only flags and the calls they lead to: flag sets that
// report their own errors, a repeatable flag, the process environment and
// the --server/--token flags that make a client, the --data template of
// `herald publish`, the token `herald token` mints, the resume hint of
// `herald subscribe`, the version text, and a log handler that writes
// "herald <command>: …" lines. It holds no state; cmd/herald and
// internal/bench use it; it imports client and server (for minting).
package cli
