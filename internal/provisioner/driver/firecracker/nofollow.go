package firecracker

import (
	"context"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// A jail's files and sockets are its Firecracker's to replace: one that escaped its guest could
// put a symlink, a FIFO or a hard link where the provisioner expects a file it made, and the
// provisioner, root, would then read, write or connect to whatever that names on the host. What
// the provisioner opens inside a VM's directory it opens through these helpers, which never
// follow a symlink in the last path element and check what they opened. (The directories above
// are the provisioner's own: the jail's root is the chroot's, its parent the provisioner's.)

// openRegular opens path, not following a symlink and not waiting for a FIFO's writer, and
// only if it is a regular file of one link (a hard link made in the jail would name a file the
// VM shares with others).
func openRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the stat error is the one to report
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		unix.Close(fd) //nolint:errcheck,gosec // refused
		return nil, fmt.Errorf("%s is not a regular file of one link (mode %#o, %d links): refused", path, st.Mode, st.Nlink)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the fcntl error is the one to report
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// socketNode opens the socket file at path itself (O_PATH, a symlink not followed) and checks it
// is a socket. Until fd is closed, its /proc/self/fd name reaches that very socket.
func socketNode(path string) (fd int, name string, err error) {
	fd, err = unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd) //nolint:errcheck,gosec // the stat error is the one to report
		return -1, "", &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd) //nolint:errcheck,gosec // refused
		return -1, "", fmt.Errorf("%s is not a socket (mode %#o): refused", path, st.Mode)
	}
	return fd, fmt.Sprintf("/proc/self/fd/%d", fd), nil
}

// dialSocket connects to the Unix socket at path, never to one a symlink there names.
func dialSocket(ctx context.Context, path string) (net.Conn, error) {
	fd, name, err := socketNode(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd) //nolint:errcheck // an O_PATH descriptor
	return (&net.Dialer{}).DialContext(ctx, "unix", name)
}

// chmodSocket sets the mode of the socket file at path, never of a file a symlink there names.
func chmodSocket(path string, mode os.FileMode) error {
	fd, name, err := socketNode(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd) //nolint:errcheck // an O_PATH descriptor
	if err := unix.Chmod(name, uint32(mode.Perm())); err != nil {
		return &os.PathError{Op: "chmod", Path: path, Err: err}
	}
	return nil
}
