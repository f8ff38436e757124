package cli

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestVersionText(t *testing.T) {
	t.Parallel()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	checkout := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "e0397c2a"}, {Key: "vcs.modified", Value: "true"},
	}}
	cases := []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		want   string
	}{
		{"a checkout with changes", "", checkout,
			"herald devel\ncommit e0397c2a (with uncommitted changes)\ngo1.26.8 " + platform + "\n"},
		{"a release sets the version at link time", "v1.2.0", checkout,
			"herald v1.2.0\ncommit e0397c2a (with uncommitted changes)\ngo1.26.8 " + platform + "\n"},
		{"go install of a tagged module", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.1.0"}},
			"herald v1.1.0\ncommit unknown (built without version control information)\ngo1.26.8 " + platform + "\n"},
		{"a clean checkout", "", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"herald devel\ncommit abc\ngo1.26.8 " + platform + "\n"},
	}
	for _, tc := range cases {
		if got := VersionText(tc.linked, tc.bi); got != tc.want {
			t.Errorf("%s:\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}
