package cli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/heraldrt/herald/client"
)

// Env is what a command takes from its process besides its arguments and
// output: the environment, stdin and the clock. Commands get ProcessEnv;
// tests pass their own.
type Env struct {
	Getenv func(string) string
	Stdin  io.Reader
	Now    func() time.Time
}

// ProcessEnv is the process's own environment, stdin and clock.
func ProcessEnv() Env { return Env{Getenv: os.Getenv, Stdin: os.Stdin, Now: time.Now} }

// ClientFlags are the flags every command that talks to a server has:
// --server and --token. Their defaults come from the environment after
// parsing, so that -h never prints a secret.
type ClientFlags struct {
	Server string
	Token  string
}

// Register adds the flags to fs.
func (c *ClientFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Server, "server", "", "server base URL (default $"+EnvURL+", else "+DefaultServerURL+")")
	fs.StringVar(&c.Token, "token", "", "API key or user token, sent as Authorization: Bearer (default $"+EnvToken+", else $"+EnvAPIKey+")")
}

// Client fills the defaults from getenv and returns a client of the
// server with opts (its Token is the flags').
func (c *ClientFlags) Client(getenv func(string) string, opts client.Options) (*client.Client, error) {
	c.Server = firstSet(c.Server, getenv(EnvURL), DefaultServerURL)
	c.Token = firstSet(c.Token, getenv(EnvToken), getenv(EnvAPIKey))
	opts.Token = c.Token
	cl, err := client.New(c.Server, opts)
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	return cl, nil
}

// firstSet returns the first of its arguments that is not empty.
func firstSet(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
