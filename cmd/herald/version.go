package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/heraldrt/herald/internal/cli"
)

// version is the release version. Releases set it at link time:
//
//	go build -ldflags "-X main.version=v1.2.0" ./cmd/herald
//
// Otherwise the module version Go recorded (go install …@v1.2.0) is
// used, or "devel" for a build from a checkout.
var version string

// cmdVersion implements `herald version`: the version, the commit it was
// built from (and whether the tree had changes), and the Go version.
func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("version", "version", stderr)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	_, err := fmt.Fprint(stdout, cli.VersionText(version, bi))
	return err
}
