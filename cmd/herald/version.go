package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
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
	_, err := fmt.Fprint(stdout, versionText(version, bi))
	return err
}

// versionText renders the version lines from the link-time version (may
// be empty) and the build information (may be nil).
func versionText(linked string, bi *debug.BuildInfo) string {
	v, commit, modified, goVersion := linked, "", false, runtime.Version()
	if bi != nil {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	if commit == "" {
		commit = "unknown (built without version control information)"
	} else if modified {
		commit += " (with uncommitted changes)"
	}
	return fmt.Sprintf("herald %s\ncommit %s\n%s %s/%s\n", v, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}
