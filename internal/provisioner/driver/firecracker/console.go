package firecracker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestlog"
)

// Console lines: a line longer than maxConsoleLine is cut; an unfinished last line is copied as
// it is once it has not grown for partialWait (a prompt, or the last words before a power-off).
// Once consoleRelease bytes of the console are copied, they are given back (release).
const (
	maxConsoleLine = 64 << 10
	partialWait    = time.Second
	consoleRelease = 1 << 20
)

// consoleTail copies the serial console into the VM's log, line by line with
// guestlog.ConsolePrefix. The console is Firecracker's standard output, a file the provisioner
// reads (and gives back what it copied): Firecracker never writes into a pipe the provisioner
// holds, so a provisioner that exits costs it nothing (no SIGPIPE, no blocked guest). How far the copy got is kept in
// offsetPath (in the state directory, out of Firecracker's reach), so the next run of the
// provisioner continues there: a line can be copied twice (the run ended between writing it and
// saving the offset), none is skipped. The console file is in the jail: it is opened only if it
// is a regular file of its own (not a symlink, FIFO or hard link a jailed Firecracker put there).
//
// The console file does not grow without bound (the VM's log stops at its limit, but Firecracker
// writes on): what is copied is given back to the filesystem, see release.
type consoleTail struct {
	path, offsetPath string
	sink             *guestlog.Sink
	log              logr.Logger

	mu           sync.Mutex
	halted       bool
	offset       int64 // console bytes in the log
	released     int64 // console bytes before this are given back
	partial      int   // length of the unfinished last line at the last read
	partialSince time.Time
}

func newConsoleTail(path, offsetPath string, sink *guestlog.Sink, log logr.Logger) *consoleTail {
	t := &consoleTail{path: path, offsetPath: offsetPath, sink: sink, log: log}
	if data, err := os.ReadFile(offsetPath); err == nil { //nolint:gosec // the provisioner's state directory
		if off, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); perr == nil && off >= 0 {
			t.offset = off
		}
	}
	return t
}

// follow copies new lines every interval until stop is closed or the console file is gone.
func (t *consoleTail) follow(stop <-chan struct{}, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if err := t.catchUp(); errors.Is(err, os.ErrNotExist) {
			return // the VM's directory was removed
		}
	}
}

// halt stops copying: after it, catchUp does nothing.
func (t *consoleTail) halt() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.halted = true
}

// catchUp copies the console's complete lines written since the last call.
func (t *consoleTail) catchUp() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.halted {
		return nil
	}
	// Read and write: what is copied is given back (release).
	f, err := openRegular(t.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open console: %w", err)
	}
	defer f.Close() //nolint:errcheck // nothing written through it
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat console: %w", err)
	}
	size := info.Size()
	if size < t.offset {
		t.offset, t.released, t.partial = 0, 0, 0 // truncated: what is there now is new
	}
	if size == t.offset {
		return nil
	}
	if _, err := f.Seek(t.offset, io.SeekStart); err != nil {
		return fmt.Errorf("seek console: %w", err)
	}
	start := t.offset
	rd := bufio.NewReaderSize(io.LimitReader(f, size-t.offset), maxConsoleLine)
	for {
		line, err := rd.ReadSlice('\n')
		if err == nil {
			t.emit(line[:len(line)-1], len(line))
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			t.emit(line, len(line))
			continue
		}
		if !errors.Is(err, io.EOF) {
			t.log.Error(err, "reading the console")
			break
		}
		switch {
		case len(line) == 0:
			t.partial = 0
		case len(line) != t.partial:
			t.partial, t.partialSince = len(line), time.Now() // perhaps still being written
		case time.Since(t.partialSince) >= partialWait:
			t.emit(line, len(line))
		}
		break
	}
	if t.offset != start {
		t.save()
	}
	if t.offset-t.released >= consoleRelease {
		t.release(f)
	}
	return nil
}

// punchHole gives back the bytes [off, off+n) of f's file, keeping its size; a variable for the
// tests of filesystems that cannot.
var punchHole = func(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// release gives back the console bytes copied so far, f being the console file. It punches a hole
// where they were: every offset stays where it is, so it is safe while Firecracker writes (its
// standard output is O_APPEND: the next write lands at the end) and nothing written meanwhile is
// lost. The file's size keeps growing, its disk use does not. Where the filesystem cannot punch
// holes, the file is truncated instead, once the copy has reached its end: the offset saved as 0
// first (a crash in between copies the console again rather than skip any of it); a write of
// Firecracker's between the last read and the truncation is lost then.
func (t *consoleTail) release(f *os.File) {
	err := punchHole(f, t.released, t.offset-t.released)
	if err == nil {
		t.released = t.offset
		return
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		t.log.Error(err, "giving back the console's copied bytes")
		return
	}
	info, err := f.Stat()
	if err != nil || info.Size() != t.offset {
		return // not at the end (yet): later
	}
	copied := t.offset
	t.offset, t.released, t.partial = 0, 0, 0
	t.save()
	if err := f.Truncate(0); err != nil {
		t.log.Error(err, "truncating the console")
		t.offset = copied
		t.save()
	}
}

// emit writes one console line to the log; n console bytes are then copied.
func (t *consoleTail) emit(text []byte, n int) {
	t.sink.Line(guestlog.ConsolePrefix + guestlog.Clean(string(text))) //nolint:errcheck,gosec // logged by the sink
	t.offset += int64(n)
	t.partial = 0
}

// save writes the offset so that a crash leaves either the old or the new one.
func (t *consoleTail) save() {
	tmp, err := os.CreateTemp(filepath.Dir(t.offsetPath), filepath.Base(t.offsetPath)+".*") // 0600
	if err == nil {
		_, err = tmp.WriteString(strconv.FormatInt(t.offset, 10))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), t.offsetPath)
		}
		if err != nil {
			os.Remove(tmp.Name()) //nolint:errcheck,gosec // the first error is the one to report
		}
	}
	if err != nil {
		t.log.Error(err, "saving the console offset")
	}
}
