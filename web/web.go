// Package web serves Herald's pages: the browser client (/herald.js and
// its type declarations), the demo chat (/demo) and the admin dashboard
// (/admin). Everything is embedded in the binary; nothing comes from a
// CDN. The pages talk to the server only through its public surface (the
// transports and the HTTP API), as any web app would.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
)

//go:embed herald/herald.js herald/herald.d.ts demo admin
var files embed.FS

// Pages serves the embedded files.
type Pages struct {
	srv    *server.Server
	log    *slog.Logger
	assets map[string]*asset // by URL path
}

// asset is one file, ready to serve: its bytes, gzipped copy, type and
// entity tag.
type asset struct {
	body, gz []byte
	ctype    string
	etag     string
	// cache is its Cache-Control: pages revalidate, the client may be
	// kept a few minutes.
	cache string
}

// New prepares the pages for srv; logger takes what goes wrong serving
// them.
func New(srv *server.Server, logger *slog.Logger) (*Pages, error) {
	p := &Pages{srv: srv, log: logger, assets: map[string]*asset{}}
	add := func(urlPath, file, cache string) error {
		b, err := files.ReadFile(file)
		if err != nil {
			return fmt.Errorf("web: %w", err)
		}
		p.assets[urlPath] = newAsset(b, file, cache)
		return nil
	}
	if err := add("/herald.js", "herald/herald.js", "public, max-age=300"); err != nil {
		return nil, err
	}
	if err := add("/herald.d.ts", "herald/herald.d.ts", "public, max-age=300"); err != nil {
		return nil, err
	}
	for _, dir := range []string{"demo", "admin"} {
		err := fs.WalkDir(files, dir, func(name string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			urlPath := "/" + name
			if path.Base(name) == "index.html" {
				urlPath = "/" + path.Dir(name)
			}
			return add(urlPath, name, "no-cache")
		})
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newAsset(b []byte, name, cache string) *asset {
	sum := sha256.Sum256(b)
	a := &asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, cache: cache}
	switch path.Ext(name) {
	case ".ts":
		a.ctype = "application/typescript; charset=utf-8"
	case ".js":
		a.ctype = "text/javascript; charset=utf-8"
	default:
		a.ctype = mime.TypeByExtension(path.Ext(name))
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	if gz.Len() < len(b) {
		a.gz = gz.Bytes()
	}
	return a
}

// Routes adds the pages to r.
func (p *Pages) Routes(r *httprouter.Router) {
	r.HandlerFunc(http.MethodGet, "/herald.js", p.serve)
	r.HandlerFunc(http.MethodGet, "/herald.d.ts", p.serve)
	r.HandlerFunc(http.MethodGet, "/demo", p.serve)
	r.HandlerFunc(http.MethodGet, "/demo/:file", p.serve)
	r.HandlerFunc(http.MethodPost, "/demo/token", p.demoToken)
	r.HandlerFunc(http.MethodGet, "/admin", p.serve)
	r.HandlerFunc(http.MethodGet, "/admin/:file", p.serve)
}

// serve writes an embedded file, gzipped when the client takes it, and
// answers 304 to a request that already holds it.
func (p *Pages) serve(w http.ResponseWriter, r *http.Request) {
	a, ok := p.assets[strings.TrimSuffix(r.URL.Path, "/")]
	if !ok {
		server.WriteError(w, r, server.Errorf(http.StatusNotFound, "no page %s", r.URL.Path), p.log)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", a.cache)
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept-Encoding")
	if strings.HasSuffix(a.ctype, "html; charset=utf-8") {
		// The pages load only their own scripts and styles and talk only
		// to this origin.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
	}
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	_, _ = w.Write(body)
}

// demoUserRE is what a demo user name may be: a token's subject.
var demoUserRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// demoToken gives the demo a user token for a name of its choice, signed
// with the server's HS256 secret. Only in dev mode: there every channel is
// open anyway and the server listens on loopback only; elsewhere the demo
// asks for a token the backend made.
func (p *Pages) demoToken(w http.ResponseWriter, r *http.Request) {
	cfg := p.srv.Config()
	if !cfg.Dev || cfg.JWTSecret == "" {
		server.WriteError(w, r, server.Errorf(http.StatusNotFound, "demo tokens are given in dev mode only (herald serve --dev); paste a user token made by your backend or `herald token`"), p.log)
		return
	}
	var req struct {
		User string `json:"user"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		server.WriteError(w, r, server.Invalidf("demo token body: %v", err), p.log)
		return
	}
	if !demoUserRE.MatchString(req.User) {
		server.WriteError(w, r, server.Invalidf("user %q: want 1 to 32 of A-Z a-z 0-9 _ -", req.User), p.log)
		return
	}
	now := time.Now()
	tok, err := server.MintToken(cfg.JWTSecret, server.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: req.User, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}, Attrs: map[string]any{"name": req.User}})
	if err != nil {
		server.WriteError(w, r, fmt.Errorf("demo token: %w", err), p.log)
		return
	}
	server.WriteJSON(w, map[string]string{"token": tok, "user": req.User})
}
