// Package jsonlog appends JSON objects, one a line, to a file meant to outlive crashes:
// a line cut short by a crash is removed on the next Open, and a line carrying an id is
// written at most once even when the caller retries it after a restart.
//
// One Writer owns a file: two processes appending to the same path would defeat both the
// rotation bookkeeping and the "previous line" AppendFunc hands out.
package jsonlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// FsyncPolicy says when appended lines are forced to stable storage.
type FsyncPolicy string

const (
	// FsyncAlways makes each line durable before Append returns.
	FsyncAlways FsyncPolicy = "always"
	// FsyncInterval keeps fsync off the write path and bounds what a power failure can
	// lose to about one Options.FsyncInterval of lines.
	FsyncInterval FsyncPolicy = "interval"
	// FsyncNever leaves flushing to the operating system: lines survive the process
	// crashing, not necessarily the machine.
	FsyncNever FsyncPolicy = "never"
)

// ParseFsyncPolicy turns a flag value into a FsyncPolicy.
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch p := FsyncPolicy(s); p {
	case FsyncAlways, FsyncInterval, FsyncNever:
		return p, nil
	}
	return "", fmt.Errorf("unknown fsync policy %q: valid values are %q, %q and %q", s, FsyncAlways, FsyncInterval, FsyncNever)
}

const (
	// DefaultFsyncInterval is used when Options.FsyncInterval is zero.
	DefaultFsyncInterval = time.Second
	// DefaultMaxFiles is used when Options.MaxFiles is zero.
	DefaultMaxFiles = 5
	// DefaultDedupeWindow is used when Options.DedupeWindow is zero.
	DefaultDedupeWindow = 1 << 16

	// maxTailBytes bounds what Open reads to reload ids, so that opening a large log stays
	// cheap; ids older than this are forgotten across a restart.
	maxTailBytes = 4 << 20
	// scanChunk is how much is read at a time while looking backwards for a line start.
	scanChunk = 64 << 10
)

// ErrClosed is returned by a Writer's methods once it was closed.
var ErrClosed = errors.New("jsonlog: writer is closed")

// Options configures Open. Zero values select the defaults.
type Options struct {
	// Path is the file appended to. Its directory must exist.
	Path string
	// Fsync defaults to FsyncAlways.
	Fsync FsyncPolicy
	// FsyncInterval is the most often FsyncInterval syncs (default DefaultFsyncInterval).
	FsyncInterval time.Duration
	// MaxSize is the size in bytes a file may not grow past before it is rotated; 0 never rotates.
	// A single line longer than MaxSize still gets written, alone in its file.
	MaxSize int64
	// MaxFiles is how many rotated files (Path.1 … Path.MaxFiles) are kept (default DefaultMaxFiles).
	MaxFiles int
	// DedupeWindow is how many of the latest ids are remembered (default DefaultDedupeWindow).
	DedupeWindow int
}

func (o Options) withDefaults() (Options, error) {
	if o.Path == "" {
		return o, errors.New("jsonlog: no path given")
	}
	if o.Fsync == "" {
		o.Fsync = FsyncAlways
	}
	if _, err := ParseFsyncPolicy(string(o.Fsync)); err != nil {
		return o, err
	}
	if o.FsyncInterval < 0 || o.MaxSize < 0 || o.MaxFiles < 0 || o.DedupeWindow < 0 {
		return o, fmt.Errorf("negative jsonlog option: fsync interval %s, max size %d, max files %d, dedupe window %d",
			o.FsyncInterval, o.MaxSize, o.MaxFiles, o.DedupeWindow)
	}
	if o.FsyncInterval == 0 {
		o.FsyncInterval = DefaultFsyncInterval
	}
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.DedupeWindow == 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	return o, nil
}

// Writer appends lines to one file. Its methods are safe for concurrent use.
type Writer struct {
	opts      Options
	recovered []byte

	mu   sync.Mutex
	f    *os.File
	size int64
	// prev is the last complete line written, kept across rotation for hash chains.
	prev []byte
	seen map[string]struct{}
	// ids holds the remembered ids in a ring so the oldest is forgotten first.
	ids     []string
	nextID  int
	dirty   bool
	closed  bool
	syncErr error
	// broken is set when a failed write could not be undone: appending more would glue
	// the next line to a fragment.
	broken error

	stopSync chan struct{}
	syncDone chan struct{}
}

// Open opens or creates (mode 0600) the file at opts.Path for appending. A partial last
// line, left by a crash in the middle of a write, is cut off; Recovered returns it.
func Open(opts Options) (*Writer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	f, err := openAppend(opts.Path)
	if err != nil {
		return nil, err
	}
	w := &Writer{opts: opts, f: f, seen: make(map[string]struct{})}
	if err := w.load(); err != nil {
		_ = f.Close()
		return nil, err
	}
	if opts.Fsync != FsyncNever {
		// A file just created is only durable once its directory entry is.
		if err := syncDir(filepath.Dir(opts.Path)); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	if opts.Fsync == FsyncInterval {
		w.stopSync = make(chan struct{})
		w.syncDone = make(chan struct{})
		go w.syncEvery(opts.FsyncInterval)
	}
	return w, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err == nil {
		return f, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(path)
		if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("open log %s: its directory %s does not exist and is not created automatically: %w", path, dir, err)
		}
	}
	return nil, fmt.Errorf("open log %s: %w", path, err)
}

// load cuts a partial last line and reloads prev and the ids of the file's tail.
func (w *Writer) load() error {
	path := w.opts.Path
	info, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("stat log %s: %w", path, err)
	}
	size := info.Size()
	end, err := completeEnd(w.f, size)
	if err != nil {
		return fmt.Errorf("recover log %s: %w", path, err)
	}
	if end < size {
		partial := make([]byte, size-end)
		if _, err := w.f.ReadAt(partial, end); err != nil {
			return fmt.Errorf("read partial last line of log %s: %w", path, err)
		}
		if err := w.f.Truncate(end); err != nil {
			return fmt.Errorf("cut partial last line of log %s: %w", path, err)
		}
		// The cut must be durable before new lines follow it, whatever the policy:
		// otherwise a second crash could resurrect the fragment in front of them.
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("fsync log %s after cutting its partial last line: %w", path, err)
		}
		w.recovered = partial
	}
	w.size = end

	if w.prev, err = lastLine(w.f, end); err != nil {
		return fmt.Errorf("read last line of log %s: %w", path, err)
	}
	if end == 0 && w.opts.MaxSize > 0 {
		// Rotated just before a restart: the chain continues from the newest rotated file.
		if w.prev, err = lastLineOfFile(rotatedName(path, 1)); err != nil {
			return err
		}
	}
	if err := w.loadIDs(end); err != nil {
		return fmt.Errorf("reload ids of log %s: %w", path, err)
	}
	return nil
}

// loadIDs remembers the ids of the last DedupeWindow lines among the file's last
// maxTailBytes bytes before end.
func (w *Writer) loadIDs(end int64) error {
	if end == 0 {
		return nil
	}
	// One byte before the window tells whether the window starts at a line start.
	from := max(0, end-maxTailBytes-1)
	buf := make([]byte, end-from)
	if _, err := w.f.ReadAt(buf, from); err != nil {
		return err
	}
	if from > 0 {
		i := bytes.IndexByte(buf, '\n')
		buf = buf[i+1:]
	}
	lines := bytes.Split(bytes.TrimSuffix(buf, []byte{'\n'}), []byte{'\n'})
	if len(lines) > w.opts.DedupeWindow {
		lines = lines[len(lines)-w.opts.DedupeWindow:]
	}
	for _, line := range lines {
		if id, ok := lineID(line); ok && !w.seenLocked(id) {
			w.rememberLocked(id)
		}
	}
	return nil
}

// Recovered returns the bytes Open cut off the end of the file, nil when it was intact.
func (w *Writer) Recovered() (discarded []byte) {
	return bytes.Clone(w.recovered)
}

// LastLine returns the last complete line written to the log (without its newline), nil
// when there is none.
func (w *Writer) LastLine() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.prev)
}

// Path returns the path of the current file.
func (w *Writer) Path() string {
	return w.opts.Path
}

// Append writes line, one complete JSON object without a newline. When id is not empty,
// it must equal the line's top-level "id" field, since that is how Open recognises
// lines written before a restart; a line whose id was already written is skipped and
// written is false. written can be true along with an error when only the fsync failed:
// the line is in the file and retrying it with its id is a no-op.
func (w *Writer) Append(id string, line []byte) (written bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return false, err
	}
	if id != "" && w.seenLocked(id) {
		return false, nil
	}
	return w.writeLocked(id, line)
}

// AppendFunc is Append for a line that depends on the one before it, such as a hash
// chain: build gets a copy of the previous complete line written and runs under the
// writer's lock, so no other line can come in between. That line may be in a rotated
// file, also after a restart that finds the current file empty; prev is nil when there
// is none. build is not called when id was already written.
func (w *Writer) AppendFunc(id string, build func(prev []byte) ([]byte, error)) (written bool, err error) {
	if build == nil {
		return false, errors.New("jsonlog: AppendFunc needs a build function")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return false, err
	}
	if id != "" && w.seenLocked(id) {
		return false, nil
	}
	line, err := build(bytes.Clone(w.prev))
	if err != nil {
		return false, fmt.Errorf("build line for log %s: %w", w.opts.Path, err)
	}
	return w.writeLocked(id, line)
}

func (w *Writer) usableLocked() error {
	if w.closed {
		return fmt.Errorf("append to log %s: %w", w.opts.Path, ErrClosed)
	}
	return w.broken
}

func (w *Writer) writeLocked(id string, line []byte) (bool, error) {
	path := w.opts.Path
	if err := checkLine(id, line); err != nil {
		return false, fmt.Errorf("append to log %s: %w", path, err)
	}
	// One write call per line: with O_APPEND the kernel never interleaves it with others.
	rec := make([]byte, len(line)+1)
	copy(rec, line)
	rec[len(line)] = '\n'

	if w.opts.MaxSize > 0 && w.size > 0 && w.size+int64(len(rec)) > w.opts.MaxSize {
		if err := w.rotateLocked(); err != nil {
			return false, err
		}
	}
	n, err := w.f.Write(rec)
	if err != nil {
		if n > 0 {
			if tErr := w.f.Truncate(w.size); tErr != nil {
				w.broken = fmt.Errorf("log %s holds a partial line that could not be cut (%w); reopen it to recover", path, tErr)
			}
		}
		return false, fmt.Errorf("append to log %s: %w", path, err)
	}
	w.size += int64(n)
	w.prev = rec[:len(line):len(line)]
	if id != "" {
		w.rememberLocked(id)
	}
	w.dirty = true

	switch w.opts.Fsync {
	case FsyncAlways:
		if err := w.f.Sync(); err != nil {
			return true, fmt.Errorf("fsync log %s: %w", path, err)
		}
		w.dirty = false
	case FsyncInterval:
		// A failed background fsync has no caller of its own; this is the next one.
		if err := w.syncErr; err != nil {
			w.syncErr = nil
			return true, err
		}
	}
	return true, nil
}

func checkLine(id string, line []byte) error {
	if bytes.IndexByte(line, '\n') >= 0 {
		return errors.New("line contains a newline: each line must be exactly one JSON object")
	}
	trimmed := bytes.TrimLeft(line, " \t\r")
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(line) {
		return errors.New("line is not a JSON object")
	}
	if id != "" {
		if got, _ := lineID(line); got != id {
			return fmt.Errorf("the line's \"id\" field is %q but the id given is %q: they must match for repeats to be recognised after a restart", got, id)
		}
	}
	return nil
}

// lineID returns the string in line's top-level "id" field. The key is matched exactly,
// unlike decoding into a struct, which would also take "ID".
func lineID(line []byte) (string, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(line, &fields) != nil {
		return "", false
	}
	raw, ok := fields["id"]
	if !ok {
		return "", false
	}
	var id string
	if json.Unmarshal(raw, &id) != nil || id == "" {
		return "", false
	}
	return id, true
}

func (w *Writer) seenLocked(id string) bool {
	_, ok := w.seen[id]
	return ok
}

func (w *Writer) rememberLocked(id string) {
	if len(w.ids) < w.opts.DedupeWindow {
		w.ids = append(w.ids, id)
	} else {
		delete(w.seen, w.ids[w.nextID])
		w.ids[w.nextID] = id
		w.nextID = (w.nextID + 1) % w.opts.DedupeWindow
	}
	w.seen[id] = struct{}{}
}

func rotatedName(path string, n int) string {
	return path + "." + strconv.Itoa(n)
}

// rotateLocked moves path to path.1 (and path.N to path.N+1) and continues in a new file.
func (w *Writer) rotateLocked() error {
	path := w.opts.Path
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync log %s before rotating it: %w", path, err)
	}
	oldest := rotatedName(path, w.opts.MaxFiles)
	if err := os.Remove(oldest); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove oldest rotated log %s: %w", oldest, err)
	}
	for i := w.opts.MaxFiles - 1; i >= 1; i-- {
		from, to := rotatedName(path, i), rotatedName(path, i+1)
		if err := os.Rename(from, to); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate log %s to %s: %w", from, to, err)
		}
	}
	first := rotatedName(path, 1)
	if err := os.Rename(path, first); err != nil {
		return fmt.Errorf("rotate log %s to %s: %w", path, first, err)
	}
	f, err := openAppend(path)
	if err != nil {
		// Put the file back where readers look for it, so the writer can go on using it.
		if backErr := os.Rename(first, path); backErr != nil {
			w.broken = fmt.Errorf("log %s was rotated to %s but no new file could be opened (%w) nor the old one moved back (%w)", path, first, err, backErr)
		}
		return fmt.Errorf("rotate log %s: %w", path, err)
	}
	// The old file was synced above: closing it has nothing left to lose.
	_ = w.f.Close()
	w.f, w.size = f, 0
	if w.opts.Fsync != FsyncNever {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("rotate log %s: %w", path, err)
		}
	}
	return nil
}

func (w *Writer) syncEvery(interval time.Duration) {
	defer close(w.syncDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-w.stopSync:
			return
		case <-ticker.C:
			w.syncIfDirty()
		}
	}
}

func (w *Writer) syncIfDirty() {
	w.mu.Lock()
	if !w.dirty || w.closed {
		w.mu.Unlock()
		return
	}
	f := w.f
	w.dirty = false
	w.mu.Unlock()

	// Syncing outside the lock keeps appends flowing during a slow fsync.
	err := f.Sync()
	if err == nil || errors.Is(err, os.ErrClosed) {
		// os.ErrClosed: a rotation closed f, after syncing it itself.
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dirty = true
	if w.syncErr == nil {
		w.syncErr = fmt.Errorf("background fsync of log %s: %w", w.opts.Path, err)
	}
}

// Close syncs and closes the file, whatever the policy: a clean shutdown loses nothing.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("close log %s: %w", w.opts.Path, ErrClosed)
	}
	w.closed = true
	w.mu.Unlock()

	// Stopped outside the lock: the syncer takes it on every tick.
	if w.stopSync != nil {
		close(w.stopSync)
		<-w.syncDone
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	if w.syncErr != nil {
		errs = append(errs, w.syncErr)
	}
	if err := w.f.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("fsync log %s: %w", w.opts.Path, err))
	}
	if err := w.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close log %s: %w", w.opts.Path, err))
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s to fsync it: %w", dir, err)
	}
	defer func() { _ = d.Close() }() // its Sync result is what counts
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
