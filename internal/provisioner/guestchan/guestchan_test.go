package guestchan_test

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestchan"
)

func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock_1024")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return ln, path
}

// TestServesOnceAndReadsTheRequest: the first connection gets the payload and its end; the
// guest's request is read, so the channel is closed with nothing unread; nobody can connect
// again, and the caller's payload is cleared.
func TestServesOnceAndReadsTheRequest(t *testing.T) {
	ln, path := listen(t)
	payload := []byte(`{"token":"secret"}` + "\n")
	read := make(chan struct{})
	ch := guestchan.Serve(ln, payload, func() { close(read) })

	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() //nolint:errcheck // test end
	if _, err := io.WriteString(conn, guest.TokenRequest+"\n"); err != nil {
		t.Fatal(err)
	}
	// The payload ends with the host's half-close: the guest need not close first.
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"token":"secret"}`+"\n" {
		t.Errorf("read %q", got)
	}
	<-read
	conn.Close() //nolint:errcheck,gosec // the guest is done: the host's drain ends
	done := make(chan error, 1)
	go func() { done <- ch.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("wait: %v", err)
		}
	case <-time.After(500 * time.Millisecond):
		t.Error("the channel waited for its drain deadline although the guest had closed")
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("a second connection was accepted")
	}
	for _, b := range payload {
		if b != 0 {
			t.Fatalf("payload not cleared: %q", payload)
		}
	}
}

// TestClosedBeforeTheGuestDropsThePayload: Close before any connection; nothing is served.
func TestClosedBeforeTheGuestDropsThePayload(t *testing.T) {
	ln, path := listen(t)
	payload := []byte("secret\n")
	ch := guestchan.Serve(ln, payload, func() { t.Error("read after close") })
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ch.Wait(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("wait: %v, want closed", err)
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("connected after close")
	}
	if string(payload) != "\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("payload not cleared: %q", payload)
	}
}
