package bench

import (
	"net/http"
	"time"
)

const (
	// publishTimeout bounds one request of the tool and the wait for its
	// answer (a publish, an acknowledgement, a handshake).
	publishTimeout = 30 * time.Second
	// wsWriteTimeout bounds one frame write, as the server's
	// ws.write_timeout.
	wsWriteTimeout = 10 * time.Second
)

// setAuth sets the bearer token, if there is one.
func setAuth(h http.Header, token string) {
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
}
