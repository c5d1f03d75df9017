// Package initramfs writes the kernel's initramfs format (a gzipped "newc" cpio archive) and
// resolves kernel modules with their dependencies, so that a test or a host can assemble a
// guest's boot image in Go, with no cpio or mkinitramfs on the machine.
package initramfs

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Writer writes a gzipped newc archive.
type Writer struct {
	gz   *gzip.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{gz: gzip.NewWriter(w), ino: 1, dirs: map[string]bool{"": true, ".": true, "/": true}}
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

func (w *Writer) header(name string, mode, size, rdevMajor, rdevMinor uint32) {
	if w.err != nil {
		return
	}
	name = strings.TrimPrefix(name, "/")
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// The newc header: magic and 13 eight-digit hex fields; name (with its NUL) and data are
	// each padded to 4 bytes.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.ino++
	w.write([]byte(hdr))
	w.write(append([]byte(name), 0))
	w.pad(len(hdr) + len(name) + 1)
}

func (w *Writer) write(b []byte) {
	if w.err == nil {
		_, w.err = w.gz.Write(b)
	}
}

func (w *Writer) pad(n int) {
	if r := n % 4; r != 0 {
		w.write(make([]byte, 4-r))
	}
}

// Dir adds a directory and its missing parents (mode 0755).
func (w *Writer) Dir(name string) {
	name = path.Clean("/" + name)
	if w.dirs[name] {
		return
	}
	w.Dir(path.Dir(name))
	w.dirs[name] = true
	w.header(name, modeDir|0o755, 0, 0, 0)
}

// File adds a regular file with perm, making its parent directories.
func (w *Writer) File(name string, perm os.FileMode, data []byte) {
	name = path.Clean("/" + name)
	w.Dir(path.Dir(name))
	w.header(name, modeFile|uint32(perm.Perm()), uint32(len(data)), 0, 0) //nolint:gosec // initramfs members are far below 4 GiB
	w.write(data)
	w.pad(len(data))
}

// CharDev adds a character device node.
func (w *Writer) CharDev(name string, perm os.FileMode, major, minor uint32) {
	name = path.Clean("/" + name)
	w.Dir(path.Dir(name))
	w.header(name, modeChar|uint32(perm.Perm()), 0, major, minor)
}

// Close writes the trailer and flushes; it returns the first error met.
func (w *Writer) Close() error {
	w.header("TRAILER!!!", 0, 0, 0, 0)
	if w.err != nil {
		return fmt.Errorf("initramfs: %w", w.err)
	}
	if err := w.gz.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// Modules returns the files of the named modules (e.g. "virtio_net") and of everything they
// depend on, relative to moduleDir (/lib/modules/<version>), in an order they can be loaded in:
// dependencies first, each once. It reads moduleDir/modules.dep.
func Modules(moduleDir string, names ...string) ([]string, error) {
	f, err := os.Open(filepath.Join(moduleDir, "modules.dep")) //nolint:gosec // a kernel's module directory
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	defer f.Close() //nolint:errcheck // read-only
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(rest)
		base := path.Base(file)
		base = base[:strings.Index(base, ".ko")]
		byName[strings.ReplaceAll(base, "-", "_")] = file
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules: read modules.dep: %w", err)
	}
	var out []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		// modules.dep lists every transitive dependency, the last one first needed; loading
		// each one's own dependencies before it gives a valid order either way.
		for _, d := range deps[file] {
			visit(d)
		}
		out = append(out, file)
	}
	for _, n := range names {
		file, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("modules: %s is not a module of %s (built in, or missing)", n, moduleDir)
		}
		visit(file)
	}
	return out, nil
}
