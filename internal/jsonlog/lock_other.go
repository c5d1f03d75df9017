//go:build !unix

package jsonlog

import (
	"errors"
	"os"
)

// errLocked is lockFile finding the file locked already.
var errLocked = errors.New("locked by another process")

// lockFile does nothing where flock does not exist: the operator runs on Linux, and this
// only keeps the package building elsewhere.
func lockFile(*os.File) error { return nil }
