package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `herald: a real-time channel server (WebSocket, SSE, long polling)

Usage:
  herald serve        [flags]   run the server (herald serve --dev for a local start)
  herald config check FILE      validate a configuration file as serve would and print what it sets
  herald publish      [flags]   publish a message through the HTTP API
  herald subscribe    [flags]   print a channel's messages as JSON lines, resuming across cuts
  herald token        [flags]   mint a user token (HS256) from HERALD_JWT_SECRET
  herald grant        [flags]   grant, revoke (--revoke) or list (--list) a user's access to channels
  herald ban          [flags]   ban a user for a while (--duration 24h), or lift a ban (--lift)
  herald disconnect   [flags]   close every session of a user
  herald webhooks     SUB       outgoing webhooks: list, dead NAME, replay NAME, test NAME
  herald backup       FILE      a consistent backup of a running server's store, taken through its API
  herald restore      FILE      write a backup into an empty data directory (--data-dir)
  herald bench        WORKLOAD  load-test a server on this machine: fanout, channels, idle, resume, webhooks
  herald version                the version, the commit it was built from and the Go version

Run "herald <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command and returns the process's exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var cmd func(context.Context, []string, io.Writer, io.Writer) error
	switch args[0] {
	case "serve":
		cmd = cmdServe
	case "publish":
		cmd = cmdPublish
	case "subscribe":
		cmd = cmdSubscribe
	case "token":
		cmd = cmdToken
	case "bench":
		cmd = cmdBench
	case "config":
		cmd = cmdConfig
	case "grant":
		cmd = cmdGrant
	case "ban":
		cmd = cmdBan
	case "disconnect":
		cmd = cmdDisconnect
	case "webhooks":
		cmd = cmdWebhooks
	case "backup":
		cmd = cmdBackup
	case "restore":
		cmd = cmdRestore
	case "version", "--version":
		cmd = cmdVersion
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "herald %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
