package writer

import (
	"context"
	"sync"
)

// Group owns goroutines that outlive the request that started them (the
// writer and reader of a hijacked stream or socket): it starts them, and
// Wait waits for them. After Wait has begun, Go refuses new ones, so a
// shutdown that waits is never raced by a late connection. The zero value
// is ready to use.
type Group struct {
	mu      sync.Mutex
	running int
	closing bool
	idle    chan struct{} // closed when running drops to zero while closing
}

// Go runs f on a new goroutine owned by g. It reports false, running
// nothing, once Wait has been called.
func (g *Group) Go(f func()) bool {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return false
	}
	g.running++
	g.mu.Unlock()
	go func() {
		defer g.done()
		f()
	}()
	return true
}

func (g *Group) done() {
	g.mu.Lock()
	g.running--
	if g.running == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// isClosing reports whether Wait has begun.
func (g *Group) isClosing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// Wait refuses new goroutines and waits until the running ones have
// returned, or ctx is done.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	if g.running == 0 {
		g.mu.Unlock()
		return nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
