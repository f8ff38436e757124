//go:build !linux || noepoll

package watch

import (
	"net"

	"github.com/heraldrt/herald/transports/internal/writer"
)

// poller is the epoll set of Linux; without it every connection is read
// by a goroutine of its own.
type poller struct{}

type polled struct{}

func newPoller(*writer.Group) *poller { return nil }

func (*poller) watch(net.Conn, OnRead) (*Watch, bool, bool) { return nil, false, false }

func (*polled) resume()    {}
func (*polled) stopWatch() {}
