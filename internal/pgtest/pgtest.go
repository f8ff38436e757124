//go:build unix

// Package pgtest runs a PostgreSQL cluster for a test: its own data
// folder, a free loopback port, wal_level=logical, stopped when the test
// ends. The data-sync tests and the e2e tests use it; make deps installs
// PostgreSQL.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// Cluster is a PostgreSQL cluster of a test.
type Cluster struct {
	dir, bin string
	port     int
	cred     *syscall.Credential // the unprivileged user it runs as, when the test runs as root
}

// pgBinDir finds the server's binaries (Debian keeps them out of PATH).
func pgBinDir(t testing.TB) string {
	t.Helper()
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); fileExists(filepath.Join(dir, "initdb")) {
			return dir
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		t.Fatal("PostgreSQL is not installed (make deps installs it): no initdb")
	}
	return filepath.Dir(matches[len(matches)-1])
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Start initialises and starts a cluster, stopped when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{bin: pgBinDir(t)}
	base := t.TempDir()
	c.dir = filepath.Join(base, "pg")
	if os.Geteuid() == 0 {
		// initdb refuses root: the cluster runs as nobody.
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// It must reach its folder: the test's temporary folders are
		// root's, 0700.
		if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(base, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c.run(t, "initdb", "-D", c.dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nwal_level = logical\n"+
		"max_replication_slots = 8\nmax_wal_senders = 8\nfsync = off\nshared_buffers = 16MB\n", c.port, c.dir)
	f, err := os.OpenFile(filepath.Join(c.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.Start(t)
	t.Cleanup(func() { c.Stop(t) })
	return c
}

func (c *Cluster) run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Start starts the cluster again after Stop.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	c.run(t, "pg_ctl", "-D", c.dir, "-l", filepath.Join(c.dir, "log"), "-w", "start")
}

// Stop stops the cluster (fast shutdown).
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	c.run(t, "pg_ctl", "-D", c.dir, "-m", "fast", "-w", "stop")
}

// DSN is a URL connecting to the cluster's postgres database as postgres.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Exec runs SQL statements on the cluster.
func (c *Cluster) Exec(t testing.TB, sql string) {
	t.Helper()
	conn, err := pgconn.Connect(context.Background(), c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
