//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

// transportFor is the transport named on the kernel command line (guest.ParamTransport).
func transportFor(name string) (transport, error) {
	switch name {
	case "", guest.TransportVirtioSerial:
		return virtioSerial{}, nil
	case guest.TransportVsock:
		return vsock{}, nil
	}
	return nil, fmt.Errorf("%s=%q: want %s or %s", guest.ParamTransport, name, guest.TransportVirtioSerial, guest.TransportVsock)
}

// virtioSerial reaches the provisioner over two virtio-serial ports (QEMU), found by name. A
// port does not break when the host's end goes away: the guest's writes wait until the host
// connects again, so the log stream is never resumed.
type virtioSerial struct{}

func (virtioSerial) openConfig() (io.ReadWriteCloser, error) { return openPort(guest.TokenPort) }
func (virtioSerial) openLog() (io.ReadWriteCloser, error)    { return openPort(guest.LogPort) }
func (virtioSerial) resumes() bool                           { return false }

// openPort finds a virtio-serial port by name (no udev: the name is in sysfs) and opens it.
func openPort(name string) (io.ReadWriteCloser, error) {
	matches, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == name { //nolint:gosec // sysfs
			dev := "/dev/" + filepath.Base(filepath.Dir(m))
			f, err := os.OpenFile(dev, os.O_RDWR, 0) //nolint:gosec // a device found in sysfs
			if err != nil {
				return nil, fmt.Errorf("open port %s: %w", name, err)
			}
			return f, nil
		}
	}
	return nil, fmt.Errorf("no virtio-serial port %s", name)
}

// vsock reaches the provisioner over vsock (Firecracker): the guest dials the host, CID
// guest.VsockHostCID, on guest.VsockConfigPort and guest.VsockLogPort, and Firecracker connects
// each connection to the Unix socket <uds_path>_<port> the provisioner listens on. When the
// provisioner's end closes (it restarted), Firecracker shuts the guest's end down: the log
// stream is dialled again and resumed.
//
// The dialling itself is not run by any test here: it needs a vsock device (a Firecracker VM,
// or QEMU with /dev/vhost-vsock), and the machine these tests run on has neither KVM, nor
// /dev/vhost-vsock, nor Firecracker. Everything above it (session.go) is tested over pipes and
// over the Firecracker driver's own Unix sockets.
type vsock struct{}

func (vsock) openConfig() (io.ReadWriteCloser, error) { return dialVsock(guest.VsockConfigPort) }
func (vsock) openLog() (io.ReadWriteCloser, error)    { return dialVsock(guest.VsockLogPort) }
func (vsock) resumes() bool                           { return true }

// lingerSeconds bounds a close's wait for the host to have taken what was written.
const lingerSeconds = 5

// dialVsock connects a stream socket to the host's port.
func dialVsock(port uint32) (io.ReadWriteCloser, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	// With a linger time, closing the socket waits until the host answered its shutdown, which
	// Firecracker does once it passed everything written on to the provisioner's socket: the
	// last lines, written just before the power-off, are not lost with the VM.
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: lingerSeconds}); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the setsockopt error is the one to report
		return nil, fmt.Errorf("vsock linger: %w", err)
	}
	// Blocking: the kernel bounds it (2s by default). Interrupted, the attempt is given up and
	// the caller dials again.
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: guest.VsockHostCID, Port: port}); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the connect error is the one to report
		return nil, fmt.Errorf("connect to vsock %d:%d: %w", guest.VsockHostCID, port, err)
	}
	// Non-blocking, so that the runtime's poller serves it and a Close ends a read blocked in
	// another goroutine (the acknowledgement's, the watch's).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the fcntl error is the one to report
		return nil, fmt.Errorf("vsock non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", guest.VsockHostCID, port)), nil
}
