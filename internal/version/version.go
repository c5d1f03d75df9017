// Package version carries the build's version, stamped at link time:
//
//	go build -ldflags "-X git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/version.Version=v0.1.0 ..."
package version

import (
	"fmt"
	"runtime"
)

// Stamped by the linker; the defaults mark an unstamped developer build.
var (
	Version = "v0.0.0-dev"
	Commit  = "unknown"
)

// String is the one-line form printed by --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
