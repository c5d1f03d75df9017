package firecracker

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// NoHolePunching makes the console's release work as on a filesystem that cannot punch holes,
// until the test ends.
func NoHolePunching(t testing.TB) {
	punch := punchHole
	punchHole = func(*os.File, int64, int64) error { return unix.EOPNOTSUPP }
	t.Cleanup(func() { punchHole = punch })
}
