package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/heraldrt/herald/server"
)

// corsMaxAge is how long a browser may cache a preflight answer, seconds.
const corsMaxAge = "600"

// CORS wraps h so that browsers on the allowed origins (cors.allowed_origins)
// may use /sse, /poll and /api/*: it answers preflights and adds
// Access-Control-Allow-Origin to responses. Other paths and other origins
// are passed through untouched (the browser then refuses the response, as
// it should).
func (a *API) CORS(h http.Handler) http.Handler {
	allowAll := slices.Contains(a.origins, "*")
	allowed := func(origin string) bool {
		return allowAll || slices.Contains(a.origins, origin)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !corsPath(r.URL.Path) || !allowed(origin) {
			if r.Method == http.MethodOptions && origin != "" && corsPath(r.URL.Path) {
				a.fail(w, r, server.Errorf(http.StatusForbidden, "origin %q is not allowed", origin))
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		hdr := w.Header()
		hdr.Add("Vary", "Origin")
		if allowAll {
			hdr.Set("Access-Control-Allow-Origin", "*")
		} else {
			hdr.Set("Access-Control-Allow-Origin", origin)
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			hdr.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
			hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			hdr.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		hdr.Set("Access-Control-Expose-Headers", "Retry-After")
		h.ServeHTTP(w, r)
	})
}

func corsPath(p string) bool {
	return p == "/sse" || p == "/poll" || strings.HasPrefix(p, "/api/")
}
