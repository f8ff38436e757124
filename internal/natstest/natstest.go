// Package natstest runs embedded NATS servers with JetStream for tests.
package natstest

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Start runs an embedded NATS server with JetStream storing in dir, on
// port (-1: a free one) of 127.0.0.1. The caller stops it with Shutdown;
// a server started again on the same dir and port finds what it stored.
func Start(t testing.TB, dir string, port int) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start() // stopped by Shutdown
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("the embedded NATS server did not start")
	}
	return ns
}
