package qemu

import (
	"fmt"
	"io"
	"net"
)

// Relay copies between a guest connection QEMU hands a `guestfwd=…-cmd:` command on its
// standard input and output and a TCP connection to addr. QEMU's user networking starts the
// command once per guest connection, so each guest connection gets its own host connection
// (a guestfwd to a tcp: chardev would carry every guest connection over a single one).
// The provisioner runs it as `forgejo-runner-provisioner relay <addr>`; tests run their own
// binary the same way.
func Relay(addr string, in io.Reader, out io.Writer) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("relay to %s: %w", addr, err)
	}
	defer conn.Close() //nolint:errcheck // both directions ended
	go func() {
		_, _ = io.Copy(conn, in)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	// When the host side is done the guest connection ends with this process; the guest's
	// half is not waited for.
	_, err = io.Copy(out, conn)
	if err != nil {
		return fmt.Errorf("relay from %s: %w", addr, err)
	}
	return nil
}
