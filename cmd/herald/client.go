package main

// What the commands that talk to a server share: their process
// environment and the --server and --token flags.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
)

// clientEnv is what a client command takes from its process besides its
// arguments and output: the environment and stdin. cmd* functions pass
// the real ones; tests pass their own.
type clientEnv struct {
	getenv func(string) string
	stdin  io.Reader
	now    func() time.Time
}

func processEnv() clientEnv {
	return clientEnv{getenv: os.Getenv, stdin: os.Stdin, now: time.Now}
}

// clientFlags are the flags every command that talks to a server has.
// Their defaults come from the environment after parsing, so that -h
// never prints a secret.
type clientFlags struct {
	server string
	token  string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "server base URL (default $"+cli.EnvURL+", else "+cli.DefaultServerURL+")")
	fs.StringVar(&c.token, "token", "", "API key or user token, sent as Authorization: Bearer (default $"+cli.EnvToken+", else $"+cli.EnvAPIKey+")")
}

// client fills the defaults from the environment and returns a client of
// the server.
func (c *clientFlags) client(getenv func(string) string, opts client.Options) (*client.Client, error) {
	c.server = firstSet(c.server, getenv(cli.EnvURL), cli.DefaultServerURL)
	c.token = firstSet(c.token, getenv(cli.EnvToken), getenv(cli.EnvAPIKey))
	opts.Token = c.token
	cl, err := client.New(c.server, opts)
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
