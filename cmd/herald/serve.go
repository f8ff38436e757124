package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/heraldrt/herald/internal/app"
)

// cmdServe implements `herald serve`: it loads the configuration, starts
// the server (internal/app) and serves until ctx is cancelled
// (SIGINT/SIGTERM), then stops it in order.
func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := app.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	loaded, err := app.Load(flags, os.LookupEnv, app.DevCredentials)
	if err != nil {
		return err
	}
	cfg := loaded.Config
	logger := cfg.NewLogger(stderr)
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	if cfg.Server.Dev {
		logger.Warn("DEV MODE: every channel is open to everyone; never expose this server")
		if loaded.DevKeys {
			fmt.Fprintf(stderr, "\n  Herald dev server on http://%s\n  HERALD_API_KEY=%s\n  HERALD_JWT_SECRET=%s\n  (kept in %s)\n\n",
				a.Addr(), cfg.Server.APIKey, cfg.Server.JWTSecret, filepath.Join(cfg.Store.Dir, app.DevKeyFile))
		}
	}
	return a.Run(ctx)
}
