//go:build unix

package jsonlog

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is lockFile finding the file locked already.
var errLocked = errors.New("locked by another process")

// lockFile takes an exclusive flock on f without waiting for it. The lock is released
// when f is closed, also when the process dies. Linux emulates flock with byte-range
// locks on NFS, so it holds across the hosts mounting a shared volume.
func lockFile(f *os.File) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lockErr error
	if err := conn.Control(func(fd uintptr) {
		for {
			lockErr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if !errors.Is(lockErr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(lockErr, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return lockErr
}
