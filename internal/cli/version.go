package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// VersionText renders the version lines from the link-time version (may
// be empty) and the build information (may be nil).
func VersionText(linked string, bi *debug.BuildInfo) string {
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
