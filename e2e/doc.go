// Package e2e holds Herald's black-box tests: they build the herald
// binary, run it as a subprocess on loopback addresses, and drive it with
// real clients (the herald CLI, the r3labs SSE client, plain HTTP) through
// real failures: SIGKILL, restarts, dropped connections.
package e2e
