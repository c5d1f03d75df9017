// Package overlay makes a VM's private, writable copy of a read-only base image. Firecracker
// drives are raw files, so the copy-on-write happens in the host's filesystem: a reflink
// (FICLONE) on filesystems that share extents (XFS, btrfs), which costs nothing until the guest
// writes; elsewhere a sparse copy. The base is only ever opened read-only, so one job's writes
// never reach another's disk.
package overlay

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Method says how an overlay was made.
type Method string

// The ways an overlay is made.
const (
	Reflink Method = "reflink"
	Copy    Method = "copy"
)

// Create makes dst (mode 0600, failing if it exists) as a copy-on-write clone of base, or a
// sparse copy where the filesystem cannot clone.
func Create(base, dst string) (Method, error) {
	src, err := os.Open(base) //nolint:gosec // base comes from the provisioner's image directory
	if err != nil {
		return "", fmt.Errorf("open base image: %w", err)
	}
	defer src.Close() //nolint:errcheck // read-only
	info, err := src.Stat()
	if err != nil {
		return "", fmt.Errorf("stat base image: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("base image %s is not a regular file", base)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // dst is under the VM's own directory
	if err != nil {
		return "", fmt.Errorf("create overlay: %w", err)
	}
	method, err := fill(out, src, info.Size())
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close overlay: %w", cerr)
	}
	if err != nil {
		os.Remove(dst) //nolint:errcheck,gosec // the copy error is the one to report
		return "", err
	}
	return method, nil
}

func fill(out, src *os.File, size int64) (Method, error) {
	if err := unix.IoctlFileClone(int(out.Fd()), int(src.Fd())); err == nil { //nolint:gosec // fds fit an int
		return Reflink, nil
	} else if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) &&
		!errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.ENOSYS) {
		return "", fmt.Errorf("clone base image: %w", err)
	}
	if err := sparseCopy(out, src, size); err != nil {
		return "", err
	}
	return Copy, nil
}

// sparseCopy copies src, seeking over blocks of zeros so an image that is mostly empty stays
// mostly unallocated.
func sparseCopy(out, src *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if isZero(buf[:n]) {
				if _, serr := out.Seek(int64(n), io.SeekCurrent); serr != nil {
					return fmt.Errorf("copy base image: %w", serr)
				}
			} else if _, werr := out.Write(buf[:n]); werr != nil {
				return fmt.Errorf("copy base image: %w", werr)
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("copy base image: %w", err)
		}
	}
	// A trailing hole leaves the file short of its size; Truncate sets it.
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("size overlay: %w", err)
	}
	if off != size {
		return fmt.Errorf("copy base image: read %d of %d bytes", off, size)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
