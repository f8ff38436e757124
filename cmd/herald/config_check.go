package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/heraldrt/herald/internal/app"
)

const configUsage = `Usage: herald config check [serve flags] FILE

Validates FILE exactly as "herald serve --config FILE" would (with the
HERALD_* variables and the flags given), without opening the store or
listening. Prints the effective channel rules, the token vocabulary and the
settings that differ from the defaults; exits 1 listing every problem when
the configuration is not valid.
`

// cmdConfig implements `herald config check`.
func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return runConfigCheck(args[1:], os.LookupEnv, stdout, stderr)
		case "-h", "--help", "help":
			fmt.Fprint(stderr, configUsage)
			return flag.ErrHelp
		}
	}
	return errors.New(`want "herald config check FILE" (see herald config -h)`)
}

func runConfigCheck(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), configUsage+"\nFlags (those of herald serve):\n")
		fs.PrintDefaults()
	}
	flags := app.RegisterFlags(fs)
	// The file may come before, after or between the flags.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(files) > 1:
		return fmt.Errorf("one file at a time, not %q and %q", files[0], files[1])
	case len(files) == 1 && flags.Config != "":
		return errors.New("give the file once: as FILE or as --config")
	case len(files) == 1:
		flags.Config = files[0]
	}
	if flags.Config == "" {
		if v, _ := lookupEnv(app.ConfigEnv); v == "" {
			return errors.New("name the file: herald config check FILE")
		}
	}
	loaded, err := app.Load(flags, lookupEnv, app.PeekDevCredentials)
	if err != nil {
		return err
	}
	return loaded.WriteReport(stdout)
}
