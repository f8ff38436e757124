package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// TLSConfig is the tls: section. With a certificate (cert_file and
// key_file, PEM) or ACME host names Herald serves HTTPS, and HTTP/2 on it
// — so a browser tab can hold many SSE streams to one origin, where
// HTTP/1.1 allows six. Without either it serves plain HTTP (HTTP/2 too
// with h2c: true, for a TLS-terminating proxy in front).
type TLSConfig struct {
	// CertFile and KeyFile are a PEM certificate (chain) and its key. On
	// SIGHUP both are read again, so a renewed certificate is served to
	// new connections without a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME gets certificates automatically (Let's Encrypt by default).
	ACME ACMEConfig `yaml:"acme"`
}

// ACMEConfig is tls.acme: automatic certificates for public host names,
// by the TLS-ALPN-01 challenge on the listen address (which must be
// reachable as port 443 of each host).
type ACMEConfig struct {
	// Hosts are the names certificates are asked for; no others.
	Hosts []string `yaml:"hosts"`
	// Email is the account's contact, optional.
	Email string `yaml:"email"`
	// DirectoryURL is the ACME directory. Default Let's Encrypt's.
	DirectoryURL string `yaml:"directory_url"`
}

// enabled reports whether the section asks for TLS.
func (t TLSConfig) enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || len(t.ACME.Hosts) > 0
}

// validate reports the section's problems; a certificate pair is loaded,
// so a wrong path or a key that does not match fails at start-up.
func (t TLSConfig) validate(bad func(key, format string, args ...any)) {
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		bad("tls.cert_file", "tls: give both cert_file and key_file (PEM), or neither")
	case t.CertFile != "" && len(t.ACME.Hosts) > 0:
		bad("tls.acme.hosts", "tls: a certificate (cert_file) and ACME hosts are two ways to the same thing: keep one")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			bad("tls.cert_file", "tls: load %s and %s: %v", t.CertFile, t.KeyFile, err)
		}
	}
	for _, h := range t.ACME.Hosts {
		if h == "" || h != filepath.Base(h) || len(h) > 253 {
			bad("tls.acme.hosts", "tls.acme.hosts: %q is not a host name", h)
		}
	}
}

// certificate is a reloadable certificate pair (cert_file, key_file).
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func (c *certificate) load() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", c.certFile, c.keyFile, err)
	}
	c.cur.Store(&pair)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// tlsSetup is the listener's TLS: its configuration, and for a file
// certificate what reloads it.
type tlsSetup struct {
	config *tls.Config
	cert   *certificate // nil with ACME
}

// newTLS prepares TLS for t (nil, nil when t asks for none); ACME keeps
// its account and certificates under dataDir/acme.
func newTLS(t TLSConfig, dataDir string) (*tlsSetup, error) {
	if !t.enabled() {
		return nil, nil
	}
	if len(t.ACME.Hosts) > 0 {
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			HostPolicy: autocert.HostWhitelist(t.ACME.Hosts...),
			Cache:      autocert.DirCache(filepath.Join(dataDir, acmeDir)),
			Email:      t.ACME.Email,
		}
		if t.ACME.DirectoryURL != "" {
			m.Client = &acme.Client{DirectoryURL: t.ACME.DirectoryURL}
		}
		cfg := m.TLSConfig() // h2, http/1.1 and the acme-tls/1 challenge
		cfg.MinVersion = tls.VersionTLS12
		return &tlsSetup{config: cfg}, nil
	}
	c := &certificate{certFile: t.CertFile, keyFile: t.KeyFile}
	if err := c.load(); err != nil {
		return nil, err
	}
	return &tlsSetup{cert: c, config: &tls.Config{
		GetCertificate: c.get,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}}, nil
}

// ReloadTLS reads the certificate files again; new connections get the
// new certificate, open ones keep theirs. SIGHUP does the same. It is an
// error when the App serves no file certificate, or the files do not load
// (the old certificate stays).
func (a *App) ReloadTLS() error {
	if a.tls == nil || a.tls.cert == nil {
		return errors.New("tls: no certificate files to reload (tls.cert_file, tls.key_file)")
	}
	return a.tls.cert.load()
}

// watchHangUp reloads the certificate on each SIGHUP until stop is
// closed; the App owns the goroutine and closes stop when it shuts down.
func (a *App) watchHangUp(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-stop:
			return
		case <-hup:
			if err := a.ReloadTLS(); err != nil {
				a.logger.Error("SIGHUP: the certificate was not reloaded; the old one is served", "err", err)
			} else {
				a.logger.Info("SIGHUP: certificate reloaded", "cert_file", a.tls.cert.certFile)
			}
		}
	}
}

// protocols are the HTTP versions served: HTTP/1.1 always, HTTP/2 on TLS
// (negotiated by ALPN), and HTTP/2 without TLS when h2c asks for it.
func protocols(h2c bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(h2c)
	return p
}

// acmeDir is the data directory's folder of certificates (tls.acme).
const acmeDir = "acme"
