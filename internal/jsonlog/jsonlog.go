// Package jsonlog appends JSON objects, one a line, to a file meant to outlive crashes:
// a line cut short by a crash is removed on the next Open, and a line carrying an id is
// written at most once even when the caller retries it after a restart.
//
// One Writer owns a file: two processes appending to the same path would defeat both the
// rotation bookkeeping and the "previous line" AppendFunc hands out. Open therefore locks
// the file (flock), and fails while another Writer, in this process or another, holds it.
package jsonlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

	// idBytesPerLine times DedupeWindow is how much Open reads to reload ids, between
	// minIDBudget and maxIDBudget: enough for a window of typical lines (about 500 bytes)
	// while keeping Open bounded however large the files are. Ids beyond it are forgotten
	// across a restart.
	idBytesPerLine = 1 << 10
	minIDBudget    = 1 << 20
	maxIDBudget    = 64 << 20
	// maxCut is the longest partial last line Open cuts. A crash leaves one line
	// unfinished, or after a power failure the lines of about one fsync interval as
	// zeroes: far less than this. A longer tail suggests a file that is not such a log.
	maxCut = 1 << 20
	// scanChunk is how much is read at a time while looking backwards for a line start.
	scanChunk = 64 << 10
	// idChunk is how much is read at a time while reloading ids.
	idChunk = 256 << 10
	// rotateRetryInterval is how long a writer whose rotation failed waits before trying
	// again, appending past MaxSize meanwhile: retrying on every Append would cost each
	// line a failing rotation.
	rotateRetryInterval = 10 * time.Second
)

// File operations that tests make fail; nothing else changes them.
var (
	writeFile    = (*os.File).Write
	truncateFile = (*os.File).Truncate
	renameFile   = os.Rename
	linkFile     = os.Link
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
	// A rotation also uses Path.next and Path.dropped while it runs.
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
	// now is time.Now but for tests.
	now func() time.Time

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
	// rotateAfter is when a rotation that failed may be tried again.
	rotateAfter time.Time
	// broken is set when a failed write or rotation could not be undone: appending more
	// would glue the next line to a fragment, or write to a file readers do not look at.
	// repair retries the undoing; each Append calls it until it succeeds.
	broken error
	repair func() error

	stopSync chan struct{}
	syncDone chan struct{}
}

// Open opens or creates (mode 0600) the file at opts.Path for appending, and locks it
// against other writers until Close. A partial last line, left by a crash in the middle of
// a write, is cut off; Recovered returns it. A file that does not look like a JSON-lines
// log, which suggests a wrong path, is refused and left untouched. Complete lines of NUL
// bytes only, which a power failure can leave, are stepped over and kept.
func Open(opts Options) (*Writer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	f, err := openLocked(opts.Path)
	if err != nil {
		return nil, err
	}
	w := &Writer{opts: opts, f: f, seen: make(map[string]struct{}), now: time.Now}
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

// openLocked opens path for appending and locks it. Two writers of one file, such as two
// operator replicas on a shared volume, would interleave their lines and fork a hash
// chain; the lock makes the second one fail at Open instead.
func openLocked(path string) (*os.File, error) {
	// A writer rotating the file may rename it between the open and the lock: the lock
	// then holds a rotated file, and the open is tried again on the file path now names.
	const attempts = 3
	for range attempts {
		f, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		if err := lockFile(f); err != nil {
			_ = f.Close() // nothing written
			if errors.Is(err, errLocked) {
				return nil, fmt.Errorf("%s is locked by another process: is another operator replica writing it?", path)
			}
			return nil, fmt.Errorf("lock log %s: %w", path, err)
		}
		same, err := namesFile(path, f)
		if err != nil {
			_ = f.Close() // nothing written
			return nil, err
		}
		if same {
			return f, nil
		}
		_ = f.Close() // nothing written
	}
	return nil, fmt.Errorf("open log %s: it was replaced each of %d times it was opened: is another process rotating it?", path, attempts)
}

// namesFile reports whether path is the name of f.
func namesFile(path string, f *os.File) (bool, error) {
	opened, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat log %s: %w", path, err)
	}
	named, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat log %s: %w", path, err)
	}
	return os.SameFile(opened, named), nil
}

// notJSONLines is the error for a file Open refuses to append to.
func notJSONLines(path, why string) error {
	return fmt.Errorf("open log %s: it does not look like a JSON-lines log (%s) and was left untouched: check the path, or move the file away if it is a damaged log", path, why)
}

// load checks that the file is a JSON-lines log, cuts a partial last line and reloads
// prev and the ids of the latest lines.
func (w *Writer) load() error {
	path := w.opts.Path
	info, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("stat log %s: %w", path, err)
	}
	size := info.Size()
	// Everything is checked before anything is cut: a file that is not ours, found at a
	// wrong path, must come out of Open as it went in.
	end, err := completeEnd(w.f, size, maxCut)
	if errors.Is(err, errNoLineStart) {
		return notJSONLines(path, fmt.Sprintf("its last %d bytes hold no line break", maxCut))
	}
	if err != nil {
		return fmt.Errorf("recover log %s: %w", path, err)
	}
	// Lines of NUL bytes a power failure left are stepped over, and kept.
	var recordEnd int64
	w.prev, recordEnd, err = lastRecord(w.f, end, true)
	if errors.Is(err, errNotJSONText) {
		return notJSONLines(path, "its last complete line holds "+err.Error())
	}
	if err != nil {
		return fmt.Errorf("read last line of log %s: %w", path, err)
	}
	if recordEnd > 0 && !isJSONObject(w.prev) {
		return notJSONLines(path, "its last complete line is not a JSON object")
	}
	if end < size {
		partial := make([]byte, size-end)
		if _, err := w.f.ReadAt(partial, end); err != nil {
			return fmt.Errorf("read partial last line of log %s: %w", path, err)
		}
		if end == 0 && !couldStartALine(partial) {
			return notJSONLines(path, "it holds no line break and does not start with '{'")
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

	if w.opts.MaxSize > 0 {
		if err := w.undoHalfRotation(); err != nil {
			return err
		}
		if err := w.restoreDropped(); err != nil {
			return err
		}
	}
	if recordEnd == 0 && w.opts.MaxSize > 0 {
		// Rotated just before a restart, or nothing but lines of NUL bytes: the chain
		// continues from the newest rotated file.
		if w.prev, err = lastLineOfFile(rotatedName(path, 1)); err != nil {
			return err
		}
	}
	if err := w.loadIDs(end); err != nil {
		return fmt.Errorf("reload ids of log %s: %w", path, err)
	}
	return nil
}

// isJSONObject reports whether line is one JSON object, as Append writes them.
func isJSONObject(line []byte) bool {
	trimmed := bytes.TrimLeft(line, " \t\r")
	return len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(line)
}

// couldStartALine reports whether partial, all a file holds, can be a first line cut short
// by a crash: the start of a JSON object, or the zeroes some file systems show where a
// power failure lost data that the file's size already counted.
func couldStartALine(partial []byte) bool {
	trimmed := bytes.TrimLeft(partial, " \t\r")
	return (len(trimmed) > 0 && trimmed[0] == '{') || len(bytes.Trim(partial, "\x00")) == 0
}

// undoHalfRotation removes path.1 when it is another name of the current file: a crash in
// the middle of a rotation (see rotateLocked) leaves it, and keeping it would show the
// file's lines twice once the next rotation moves it on.
func (w *Writer) undoHalfRotation() error {
	first := rotatedName(w.opts.Path, 1)
	info, err := os.Stat(first)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat rotated log %s: %w", first, err)
	}
	current, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("stat log %s: %w", w.opts.Path, err)
	}
	if !os.SameFile(info, current) {
		return nil
	}
	if err := os.Remove(first); err != nil {
		return fmt.Errorf("remove %s, a second name of log %s left by an interrupted rotation: %w", first, w.opts.Path, err)
	}
	return nil
}

// idBudget is how many bytes Open reads to reload ids.
func idBudget(window int) int64 {
	return min(max(int64(window)*idBytesPerLine, minIDBudget), maxIDBudget)
}

// loadIDs remembers the ids of the latest DedupeWindow lines that have one, looking
// through the current file's first end bytes and then, when they hold fewer, the rotated
// files newest first: an id written just before a rotation is still recognised after a
// restart. It reads at most idBudget bytes in all.
func (w *Writer) loadIDs(end int64) error {
	window := w.opts.DedupeWindow
	budget := idBudget(window)
	var ids []string // newest first
	collect := func(line []byte) bool {
		if id, ok := lineID(line); ok {
			ids = append(ids, id)
		}
		return len(ids) < window
	}
	read, err := eachLineBackward(w.f, end, budget, collect)
	if err != nil {
		return err
	}
	budget -= read
	if w.opts.MaxSize > 0 {
		// Numbers can be missing after a crash in the middle of a rotation: each is tried.
		for i := 1; i <= w.opts.MaxFiles && budget > 0 && len(ids) < window; i++ {
			read, err := idsOfFile(rotatedName(w.opts.Path, i), budget, collect)
			if err != nil {
				return err
			}
			budget -= read
		}
	}
	for i := len(ids) - 1; i >= 0; i-- {
		if !w.seenLocked(ids[i]) {
			w.rememberLocked(ids[i])
		}
	}
	return nil
}

// idsOfFile passes the lines of the file at path to collect, last first, reading at most
// budget bytes; a file that does not exist has none.
func idsOfFile(path string, budget int64, collect func([]byte) bool) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open rotated log %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	info, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat rotated log %s: %w", path, err)
	}
	read, err := eachLineBackward(f, info.Size(), budget, collect)
	if err != nil {
		return read, fmt.Errorf("read rotated log %s: %w", path, err)
	}
	return read, nil
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
// written is false. written can be true along with an error when the line is in the file
// but its fsync failed, or rotating the file failed and the line went to the current file
// past MaxSize (rotating is then tried again after a while): retrying it with its id is a
// no-op.
func (w *Writer) Append(id string, line []byte) (written bool, err error) {
	return w.appendBuilt(id, func() ([]byte, error) { return line, nil })
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
	return w.appendBuilt(id, func() ([]byte, error) {
		line, err := build(bytes.Clone(w.prev))
		if err != nil {
			return nil, fmt.Errorf("build line for log %s: %w", w.opts.Path, err)
		}
		return line, nil
	})
}

// appendBuilt writes the line line() gives, under the writer's lock, unless the writer is
// unusable or id was written already (then line is not called).
func (w *Writer) appendBuilt(id string, line func() ([]byte, error)) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return false, err
	}
	if id != "" && w.seenLocked(id) {
		return false, nil
	}
	l, err := line()
	if err != nil {
		return false, err
	}
	return w.writeLocked(id, l)
}

// usableLocked fails when the writer is closed, or broken and still not repaired.
func (w *Writer) usableLocked() error {
	if w.closed {
		return fmt.Errorf("append to log %s: %w", w.opts.Path, ErrClosed)
	}
	if w.broken != nil {
		// The cause may have gone away, such as a file system that was full.
		if err := w.repair(); err != nil {
			return fmt.Errorf("append to log %s: %w; undoing that failed again: %w", w.opts.Path, w.broken, err)
		}
		w.broken, w.repair = nil, nil
	}
	return nil
}

// breakLocked refuses appends until repair succeeds: cause says what went wrong and what
// to do about it.
func (w *Writer) breakLocked(cause error, repair func() error) {
	w.broken, w.repair = cause, repair
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

	// warn is an error the line is written despite.
	var warn error
	if w.opts.MaxSize > 0 && w.size > 0 && w.size+int64(len(rec)) > w.opts.MaxSize && !w.now().Before(w.rotateAfter) {
		rotated, err := w.rotateLocked()
		switch {
		case err == nil:
		case rotated:
			// Only the directory's fsync failed: the new file is in use.
			warn = err
		default:
			// Lines go on to the current file past MaxSize: a larger file beats lost
			// lines, and trying again on every Append would make each pay for a
			// failing rotation.
			w.rotateAfter = w.now().Add(rotateRetryInterval)
			if w.broken != nil {
				// It says what went wrong, err included, and what to do.
				return false, fmt.Errorf("append to log %s: %w", path, w.broken)
			}
			warn = fmt.Errorf("%w; lines go on to %s past its max size of %d bytes, and rotating it is tried again in %s",
				err, path, w.opts.MaxSize, rotateRetryInterval)
		}
	}
	n, err := writeFile(w.f, rec)
	if err != nil {
		if n > 0 {
			if tErr := truncateFile(w.f, w.size); tErr != nil {
				w.breakLocked(fmt.Errorf("log %s ends in a partial line that could not be cut (%w): appends are refused and retry the cut until it succeeds; if it keeps failing, fix the cause and restart, as Open cuts such a line", path, tErr),
					func() error { return truncateFile(w.f, w.size) })
			}
		}
		return false, errors.Join(fmt.Errorf("append to log %s: %w", path, err), warn)
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
			return true, errors.Join(warn, fmt.Errorf("fsync log %s: %w", path, err))
		}
		w.dirty = false
	case FsyncInterval:
		// A failed background fsync has no caller of its own; this is the next one.
		if err := w.syncErr; err != nil {
			w.syncErr = nil
			return true, errors.Join(warn, err)
		}
	}
	return true, warn
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
// Closing it releases its lock, so that another Writer can open it.
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
