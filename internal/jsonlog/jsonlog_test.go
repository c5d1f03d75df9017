package jsonlog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
)

func open(t *testing.T, opts jsonlog.Options) *jsonlog.Writer {
	t.Helper()
	w, err := jsonlog.Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	return w
}

func closeWriter(t *testing.T, w *jsonlog.Writer) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustAppend(t *testing.T, w *jsonlog.Writer, id, line string) bool {
	t.Helper()
	written, err := w.Append(id, []byte(line))
	if err != nil {
		t.Fatalf("Append(%q, %s): %v", id, line, err)
	}
	return written
}

// readLines returns the lines of a file that must end in a newline (or be empty).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end in a newline: %q", path, data)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func numbered(n int) string { return fmt.Sprintf(`{"n":%d}`, n) }

func TestAppendAndReopenKeepsEveryLineInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var want []string
	for round := range 3 {
		w := open(t, jsonlog.Options{Path: path})
		if w.Path() != path {
			t.Fatalf("Path() = %q, want %q", w.Path(), path)
		}
		for i := range 50 {
			line := numbered(round*50 + i)
			if !mustAppend(t, w, "", line) {
				t.Fatalf("line %s without an id was not written", line)
			}
			want = append(want, line)
		}
		closeWriter(t, w)
	}
	if got := readLines(t, path); !slices.Equal(got, want) {
		t.Fatalf("file holds %d lines, want %d in order:\n%v", len(got), len(want), got)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("file mode %v, want 0600: the log may hold names not everyone should read", perm)
	}
}

func TestOpenCutsAPartialLastLineAndReportsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	const partial = `{"n":3,"msg":"cut sh`
	if err := os.WriteFile(path, []byte(numbered(1)+"\n"+numbered(2)+"\n"+partial), 0o600); err != nil {
		t.Fatal(err)
	}
	w := open(t, jsonlog.Options{Path: path})
	if got := string(w.Recovered()); got != partial {
		t.Fatalf("Recovered() = %q, want %q", got, partial)
	}
	if got := string(w.LastLine()); got != numbered(2) {
		t.Fatalf("LastLine() = %q, want the last complete line %q", got, numbered(2))
	}
	mustAppend(t, w, "", numbered(3))
	closeWriter(t, w)
	if got, want := readLines(t, path), []string{numbered(1), numbered(2), numbered(3)}; !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}

	w = open(t, jsonlog.Options{Path: path})
	defer closeWriter(t, w)
	if got := w.Recovered(); got != nil {
		t.Fatalf("an intact file reported %q as recovered", got)
	}
}

func TestAPartialOnlyLineLeavesNoPreviousLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte(`{"n":1,`), 0o600); err != nil {
		t.Fatal(err)
	}
	w := open(t, jsonlog.Options{Path: path})
	defer closeWriter(t, w)
	if got := string(w.Recovered()); got != `{"n":1,` {
		t.Fatalf("Recovered() = %q", got)
	}
	var prevSeen []byte
	called := false
	if _, err := w.AppendFunc("", func(prev []byte) ([]byte, error) {
		called, prevSeen = true, prev
		return []byte(numbered(1)), nil
	}); err != nil {
		t.Fatal(err)
	}
	if !called || prevSeen != nil {
		t.Fatalf("build called %v with prev %q, want nil: the cut line was never written", called, prevSeen)
	}
}

func TestOpenNeedsTheDirectoryToExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "events.jsonl")
	_, err := jsonlog.Open(jsonlog.Options{Path: path})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open in a missing directory: %v, want an error saying the directory does not exist", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	for name, opts := range map[string]jsonlog.Options{
		"no path":                {},
		"unknown fsync":          {Path: path, Fsync: "sometimes"},
		"negative interval":      {Path: path, FsyncInterval: -1},
		"negative max size":      {Path: path, MaxSize: -1},
		"negative max files":     {Path: path, MaxFiles: -1},
		"negative dedupe window": {Path: path, DedupeWindow: -1},
	} {
		if w, err := jsonlog.Open(opts); err == nil {
			_ = w.Close()
			t.Errorf("%s: Open accepted %+v", name, opts)
		}
	}
}

func TestParseFsyncPolicy(t *testing.T) {
	for _, p := range []jsonlog.FsyncPolicy{jsonlog.FsyncAlways, jsonlog.FsyncInterval, jsonlog.FsyncNever} {
		got, err := jsonlog.ParseFsyncPolicy(string(p))
		if err != nil || got != p {
			t.Errorf("ParseFsyncPolicy(%q) = %q, %v", p, got, err)
		}
	}
	_, err := jsonlog.ParseFsyncPolicy("Always")
	if err == nil {
		t.Fatal("ParseFsyncPolicy accepted \"Always\"")
	}
	for _, valid := range []string{"always", "interval", "never"} {
		if !strings.Contains(err.Error(), valid) {
			t.Errorf("error %q does not list the valid value %q", err, valid)
		}
	}
}

func TestDedupeWithinAProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	if !mustAppend(t, w, "a", `{"id":"a","try":1}`) {
		t.Fatal("first line with id a was not written")
	}
	if mustAppend(t, w, "a", `{"id":"a","try":2}`) {
		t.Fatal("second line with id a was written")
	}
	called := false
	written, err := w.AppendFunc("a", func([]byte) ([]byte, error) {
		called = true
		return []byte(`{"id":"a","try":3}`), nil
	})
	if err != nil || written || called {
		t.Fatalf("AppendFunc with a seen id: written %v, err %v, build called %v", written, err, called)
	}
	// Lines without an id are never deduplicated, even when identical.
	mustAppend(t, w, "", `{"same":true}`)
	mustAppend(t, w, "", `{"same":true}`)
	closeWriter(t, w)
	want := []string{`{"id":"a","try":1}`, `{"same":true}`, `{"same":true}`}
	if got := readLines(t, path); !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

func TestDedupeAcrossCloseAndOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	mustAppend(t, w, "before-restart", `{"id":"before-restart"}`)
	mustAppend(t, w, "", `{"other":1}`)
	closeWriter(t, w)

	w = open(t, jsonlog.Options{Path: path})
	if mustAppend(t, w, "before-restart", `{"id":"before-restart"}`) {
		t.Fatal("an id written before the restart was written again")
	}
	if !mustAppend(t, w, "after-restart", `{"id":"after-restart"}`) {
		t.Fatal("a new id was not written")
	}
	closeWriter(t, w)
	if got := readLines(t, path); len(got) != 3 {
		t.Fatalf("lines %q, want 3", got)
	}
}

func TestDedupeWindowForgetsTheOldestIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path, DedupeWindow: 2})
	for _, id := range []string{"a", "b", "c"} {
		mustAppend(t, w, id, fmt.Sprintf(`{"id":%q}`, id))
	}
	if mustAppend(t, w, "c", `{"id":"c"}`) || mustAppend(t, w, "b", `{"id":"b"}`) {
		t.Fatal("an id inside the window was written twice")
	}
	if !mustAppend(t, w, "a", `{"id":"a"}`) {
		t.Fatal("id a should have left a window of 2 after b and c")
	}
	closeWriter(t, w)

	// Lines b, c, a: a reopened writer with a window of 2 remembers only c and a.
	w = open(t, jsonlog.Options{Path: path, DedupeWindow: 2})
	defer closeWriter(t, w)
	if mustAppend(t, w, "a", `{"id":"a"}`) || mustAppend(t, w, "c", `{"id":"c"}`) {
		t.Fatal("an id among the last 2 lines was written again after reopening")
	}
	if !mustAppend(t, w, "b", `{"id":"b"}`) {
		t.Fatal("id b is older than the last 2 lines and should have been forgotten")
	}
}

func TestAppendRejectsLinesThatAreNotOneJSONObject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	defer closeWriter(t, w)
	for name, c := range map[string]struct{ id, line string }{
		"newline inside":       {"", "{\"a\":\n1}"},
		"trailing newline":     {"", "{\"a\":1}\n"},
		"two objects":          {"", `{"a":1}{"b":2}`},
		"not JSON":             {"", `{"a":`},
		"array":                {"", `[1,2]`},
		"empty":                {"", ``},
		"id differs from line": {"x", `{"id":"y"}`},
		"id missing in line":   {"x", `{"other":"x"}`},
		"id with other case":   {"x", `{"ID":"x"}`},
	} {
		if written, err := w.Append(c.id, []byte(c.line)); err == nil || written {
			t.Errorf("%s: Append(%q, %q) = %v, %v, want an error", name, c.id, c.line, written, err)
		}
	}
	if got := readLines(t, path); len(got) != 0 {
		t.Fatalf("rejected lines reached the file: %q", got)
	}
	// A rejected id was not remembered.
	if !mustAppend(t, w, "x", `{"id":"x"}`) {
		t.Fatal("id x was remembered from a rejected line")
	}
}

func TestAppendFuncBuildErrorWritesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	defer closeWriter(t, w)
	boom := errors.New("boom")
	written, err := w.AppendFunc("k", func([]byte) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) || written {
		t.Fatalf("AppendFunc = %v, %v, want the build error", written, err)
	}
	if !mustAppend(t, w, "k", `{"id":"k"}`) {
		t.Fatal("the id of a failed build was remembered")
	}
	if _, err := w.AppendFunc("", nil); err == nil {
		t.Fatal("AppendFunc accepted a nil build function")
	}
}

func TestAppendAfterCloseFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	mustAppend(t, w, "", numbered(1))
	closeWriter(t, w)
	if written, err := w.Append("", []byte(numbered(2))); !errors.Is(err, jsonlog.ErrClosed) || written {
		t.Fatalf("Append after Close = %v, %v, want ErrClosed", written, err)
	}
	if _, err := w.AppendFunc("", func([]byte) ([]byte, error) { return []byte(numbered(2)), nil }); !errors.Is(err, jsonlog.ErrClosed) {
		t.Fatalf("AppendFunc after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); !errors.Is(err, jsonlog.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if got := readLines(t, path); len(got) != 1 {
		t.Fatalf("lines %q, want only the one before Close", got)
	}
}

func TestIntervalPolicyKeepsEveryLineAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	// A tiny interval makes the background syncer run while lines are appended.
	w := open(t, jsonlog.Options{Path: path, Fsync: jsonlog.FsyncInterval, FsyncInterval: 100 * time.Microsecond})
	var want []string
	for i := range 500 {
		mustAppend(t, w, "", numbered(i))
		want = append(want, numbered(i))
	}
	closeWriter(t, w)
	if got := readLines(t, path); !slices.Equal(got, want) {
		t.Fatalf("file holds %d lines, want %d", len(got), len(want))
	}
}

// rotationFiles returns the current file and path.1 … path.maxFiles, newest first, failing
// if a file beyond maxFiles exists.
func rotationFiles(t *testing.T, path string, maxFiles int) [][]string {
	t.Helper()
	files := [][]string{readLines(t, path)}
	for i := 1; i <= maxFiles; i++ {
		name := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(name); err != nil {
			break
		}
		files = append(files, readLines(t, name))
	}
	if _, err := os.Stat(fmt.Sprintf("%s.%d", path, maxFiles+1)); err == nil {
		t.Fatalf("%s.%d exists: more than MaxFiles=%d rotated files were kept", path, maxFiles+1, maxFiles)
	}
	return files
}

func TestRotationKeepsMaxFilesAndEveryLineOnce(t *testing.T) {
	const lineLen = len(`{"n":"0000"}` + "\n")
	line := func(i int) string { return fmt.Sprintf(`{"n":"%04d"}`, i) }

	t.Run("oldest files are removed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		w := open(t, jsonlog.Options{Path: path, MaxSize: 4 * int64(lineLen), MaxFiles: 3})
		for i := 1; i <= 30; i++ {
			mustAppend(t, w, "", line(i))
		}
		closeWriter(t, w)
		// Four lines a file: 1-4, …, 25-28 rotated, 29-30 current; 3 rotated files kept.
		files := rotationFiles(t, path, 3)
		want := [][]string{
			{line(29), line(30)},
			{line(25), line(26), line(27), line(28)},
			{line(21), line(22), line(23), line(24)},
			{line(17), line(18), line(19), line(20)},
		}
		if len(files) != len(want) {
			t.Fatalf("%d files, want %d", len(files), len(want))
		}
		for i := range want {
			if !slices.Equal(files[i], want[i]) {
				t.Errorf("file %d holds %q, want %q", i, files[i], want[i])
			}
		}
	})

	t.Run("nothing is lost while files are kept", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		maxSize := int64(3*lineLen + 5) // not a multiple: lines are never split to fill a file
		w := open(t, jsonlog.Options{Path: path, MaxSize: maxSize, MaxFiles: 20})
		for i := 1; i <= 40; i++ {
			mustAppend(t, w, "", line(i))
		}
		closeWriter(t, w)
		var all []string
		files := rotationFiles(t, path, 20)
		for i := len(files) - 1; i >= 0; i-- {
			size := 0
			for _, l := range files[i] {
				size += len(l) + 1
			}
			if int64(size) > maxSize {
				t.Errorf("file %d has %d bytes, more than MaxSize %d", i, size, maxSize)
			}
			all = append(all, files[i]...)
		}
		var want []string
		for i := 1; i <= 40; i++ {
			want = append(want, line(i))
		}
		if !slices.Equal(all, want) {
			t.Fatalf("lines across files, oldest first: %q, want each of 1-40 once in order", all)
		}
	})
}

func TestALineLongerThanMaxSizeIsWrittenAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path, MaxSize: 10, MaxFiles: 5})
	long := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 50))
	mustAppend(t, w, "", numbered(1))
	mustAppend(t, w, "", long)
	mustAppend(t, w, "", numbered(2))
	closeWriter(t, w)
	files := rotationFiles(t, path, 5)
	want := [][]string{{numbered(2)}, {long}, {numbered(1)}}
	if len(files) != len(want) {
		t.Fatalf("files %q, want %q", files, want)
	}
	for i := range want {
		if !slices.Equal(files[i], want[i]) {
			t.Fatalf("files %q, want %q", files, want)
		}
	}
}

type chained struct {
	N    int `json:"n"`
	Prev int `json:"prev"`
}

// appendChained appends a line numbered one more than the previous line and naming it.
func appendChained(w *jsonlog.Writer) error {
	_, err := w.AppendFunc("", func(prev []byte) ([]byte, error) {
		next := chained{N: 1}
		if prev != nil {
			var p chained
			if err := json.Unmarshal(prev, &p); err != nil {
				return nil, fmt.Errorf("previous line %q: %w", prev, err)
			}
			next = chained{N: p.N + 1, Prev: p.N}
		}
		return json.Marshal(next)
	})
	return err
}

// checkChain fails unless lines, oldest first, number 1…want and each names the one before.
func checkChain(t *testing.T, lines []string, want int) {
	t.Helper()
	if len(lines) != want {
		t.Fatalf("%d lines, want %d", len(lines), want)
	}
	for i, l := range lines {
		var c chained
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
		if c.N != i+1 || c.Prev != i {
			t.Fatalf("line %d is %q, want n=%d prev=%d", i+1, l, i+1, i)
		}
	}
}

func TestAppendFuncSeesThePreviousLineAcrossRotationAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	opts := jsonlog.Options{Path: path, MaxSize: 64, MaxFiles: 100}
	for range 3 {
		w := open(t, opts)
		for range 20 {
			if err := appendChained(w); err != nil {
				t.Fatal(err)
			}
		}
		closeWriter(t, w)
	}

	// A crash right after a rotation leaves an empty current file: the chain goes on
	// from the newest rotated file.
	files := rotationFiles(t, path, 100)
	for i := len(files); i >= 1; i-- {
		from := path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", path, i-1)
		}
		if err := os.Rename(from, fmt.Sprintf("%s.%d", path, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := open(t, opts)
	if err := appendChained(w); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)

	var all []string
	files = rotationFiles(t, path, 100)
	for i := len(files) - 1; i >= 0; i-- {
		all = append(all, files[i]...)
	}
	checkChain(t, all, 61)
}

func TestConcurrentAppendsWriteOnlyWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	const maxFiles = 1000
	w := open(t, jsonlog.Options{Path: path, MaxSize: 8 << 10, MaxFiles: maxFiles, Fsync: jsonlog.FsyncNever})
	const writers, perWriter, shared = 16, 200, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				// Lengths vary so that torn or interleaved writes would show.
				line := fmt.Sprintf(`{"g":%d,"i":%d,"pad":%q}`, g, i, strings.Repeat("x", (g*i)%300))
				if _, err := w.Append("", []byte(line)); err != nil {
					errs <- err
					return
				}
				if i < shared {
					// Every writer races to write the same ids: each must land once.
					id := fmt.Sprintf("shared-%d", i)
					if _, err := w.Append(id, fmt.Appendf(nil, `{"id":%q,"g":%d}`, id, g)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	closeWriter(t, w)

	seen := map[string]int{}
	for _, file := range rotationFiles(t, path, maxFiles) {
		for _, l := range file {
			var v struct {
				ID string `json:"id"`
				G  *int   `json:"g"`
				I  *int   `json:"i"`
			}
			if err := json.Unmarshal([]byte(l), &v); err != nil || v.G == nil {
				t.Fatalf("line %q is not one whole line: %v", l, err)
			}
			key := v.ID
			if key == "" {
				if v.I == nil {
					t.Fatalf("line %q has neither id nor i", l)
				}
				key = fmt.Sprintf("%d/%d", *v.G, *v.I)
			}
			seen[key]++
		}
	}
	if want := writers*perWriter + shared; len(seen) != want {
		t.Fatalf("%d distinct lines, want %d", len(seen), want)
	}
	for key, n := range seen {
		if n != 1 {
			t.Errorf("line %s written %d times", key, n)
		}
	}
}

func TestConcurrentAppendFuncKeepsTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path, MaxSize: 1 << 10, MaxFiles: 1000, Fsync: jsonlog.FsyncInterval, FsyncInterval: 100 * time.Microsecond})
	const writers, perWriter = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range perWriter {
				if err := appendChained(w); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	closeWriter(t, w)
	var all []string
	files := rotationFiles(t, path, 1000)
	for i := len(files) - 1; i >= 0; i-- {
		all = append(all, files[i]...)
	}
	checkChain(t, all, writers*perWriter)
}

func TestDedupeAcrossRotationAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	opts := jsonlog.Options{Path: path, MaxSize: 64, MaxFiles: 5}
	w := open(t, opts)
	mustAppend(t, w, "before-rotation", `{"id":"before-rotation"}`)
	// Longer than what MaxSize leaves: the file is rotated before this line.
	mustAppend(t, w, "after-rotation", fmt.Sprintf(`{"id":"after-rotation","pad":%q}`, strings.Repeat("x", 40)))
	closeWriter(t, w)
	if got := readLines(t, path+".1"); len(got) != 1 {
		t.Fatalf("%s.1 holds %q, want the line written before the rotation", path, got)
	}

	w = open(t, opts)
	defer closeWriter(t, w)
	if mustAppend(t, w, "before-rotation", `{"id":"before-rotation"}`) {
		t.Fatal("an id written before a rotation was written again after reopening")
	}
	if mustAppend(t, w, "after-rotation", `{"id":"after-rotation"}`) {
		t.Fatal("an id of the current file was written again after reopening")
	}
}

func TestOpenReloadsIDsFromRotatedFilesNewestFirstUpToTheWindow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	write := func(name string, ids ...string) {
		var buf bytes.Buffer
		for _, id := range ids {
			fmt.Fprintf(&buf, `{"id":%q}`+"\n", id)
		}
		if err := os.WriteFile(name, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(path+".3", "in-3")
	write(path+".2", "old-2", "new-2")
	write(path+".1", "in-1")
	write(path, "current")
	// A window of 4 holds current, in-1, new-2 and old-2; in-3 is older than that.
	w := open(t, jsonlog.Options{Path: path, MaxSize: 1 << 20, MaxFiles: 5, DedupeWindow: 4})
	defer closeWriter(t, w)
	for _, id := range []string{"current", "in-1", "new-2", "old-2"} {
		if mustAppend(t, w, id, fmt.Sprintf(`{"id":%q}`, id)) {
			t.Errorf("id %s, among the newest 4, was written again", id)
		}
	}
	if !mustAppend(t, w, "in-3", `{"id":"in-3"}`) {
		t.Error("id in-3 is older than the window of 4 and should not have been reloaded")
	}
}

func TestOpenReloadsIDsOnlyWithinItsByteBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	// A window of 1024 ids lets Open read 1 MiB; 1024 lines of 4 KiB are 4 MiB.
	const window, lines = 1024, 1024
	pad := strings.Repeat("x", 4<<10)
	var buf bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&buf, `{"id":"id-%d","pad":%q}`+"\n", i, pad)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	w := open(t, jsonlog.Options{Path: path, Fsync: jsonlog.FsyncNever, DedupeWindow: window})
	defer closeWriter(t, w)
	last := fmt.Sprintf("id-%d", lines-1)
	if mustAppend(t, w, last, fmt.Sprintf(`{"id":%q}`, last)) {
		t.Fatal("the id of the last line was not reloaded")
	}
	if !mustAppend(t, w, "id-0", `{"id":"id-0"}`) {
		t.Fatal("the id of the first line of a 4 MiB file was reloaded: Open read more than its budget")
	}
}

func TestASecondOpenOfTheSameFileIsRefusedUntilClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	opts := jsonlog.Options{Path: path, MaxSize: 64, MaxFiles: 3}
	w := open(t, opts)
	check := func(when string) {
		t.Helper()
		second, err := jsonlog.Open(opts)
		if err == nil {
			_ = second.Close()
			t.Fatalf("%s: a second Open of %s succeeded while the first writer holds it", when, path)
		}
		if want := path + " is locked by another process: is another operator replica writing it?"; !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: second Open: %v, want an error saying %q", when, err, want)
		}
	}
	check("before rotating")
	// The lock moves to the new file a rotation starts.
	for i := range 10 {
		mustAppend(t, w, "", numbered(i))
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Fatalf("no rotation happened: %v", err)
	}
	check("after rotating")
	closeWriter(t, w)

	w = open(t, opts)
	mustAppend(t, w, "", numbered(10))
	closeWriter(t, w)
}

func TestOpenRefusesAFileThatIsNotAJSONLinesLog(t *testing.T) {
	binary := make([]byte, 3<<20)
	for i := range binary {
		binary[i] = byte(i*7 + i/251)
		if binary[i] == '\n' {
			binary[i] = 0
		}
	}
	for name, content := range map[string][]byte{
		"text without a newline":             []byte("just some notes, not a log"),
		"text whose last line is not JSON":   []byte("[section]\nkey = value\n"),
		"text ending in a partial line":      []byte("line one\nline two\nline thr"),
		"binary without a newline":           binary,
		"binary with a newline near the end": append(bytes.Clone(binary), []byte("\n\x00\x01\x02")...),
		"binary ending in a newline":         append(bytes.Clone(binary), '\n'),
		"a JSON array line":                  []byte("[1,2,3]\n"),
		"text then a line of zeroes":         []byte("[section]\nkey = value\n\x00\x00\x00\n"),
		"binary then a line of zeroes":       append(bytes.Clone(binary), []byte("\n\x00\x00\n")...),
		"JSON lines then zeroes and text":    []byte(numbered(1) + "\n\x00\x00\x00key = value\n"),
		"JSON lines then 2 MiB of zeroes in a line": append(append([]byte(numbered(1)+"\n"),
			make([]byte, 2<<20)...), '\n'),
		"JSON lines then a fragment of 2 MiB": append([]byte(numbered(1)+"\n"),
			append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 2<<20)...)...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := jsonlog.Open(jsonlog.Options{Path: path})
			if err == nil {
				_ = w.Close()
				t.Fatal("Open accepted it")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "does not look like a JSON-lines log") {
				t.Fatalf("Open: %v, want an error naming %s and saying it does not look like a JSON-lines log", err, path)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, content) {
				t.Fatalf("Open changed a file it refused: %d bytes before, %d after", len(content), len(after))
			}
		})
	}
}

func TestOpenAcceptsAnEmptyFileAndCutsOnlyLogFragments(t *testing.T) {
	for name, c := range map[string]struct{ content, cut string }{
		"empty":                            {"", ""},
		"a first line cut short":           {`{"n":1,"msg":"cut`, `{"n":1,"msg":"cut`},
		"zeroes left by a power failure":   {numbered(1) + "\n\x00\x00\x00\x00", "\x00\x00\x00\x00"},
		"a first line of zeroes":           {"\x00\x00\x00", "\x00\x00\x00"},
		"a line after lines with an id":    {`{"id":"a"}` + "\n" + `{"id":"b"`, `{"id":"b"`},
		"a fragment of 1 MiB after a line": {numbered(1) + "\n" + strings.Repeat("y", 1<<20), strings.Repeat("y", 1<<20)},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			w := open(t, jsonlog.Options{Path: path})
			if got := string(w.Recovered()); got != c.cut {
				t.Fatalf("Recovered() = %d bytes, want %d", len(got), len(c.cut))
			}
			mustAppend(t, w, "", numbered(2))
			closeWriter(t, w)
			if got, want := readLines(t, path), strings.TrimSuffix(c.content, c.cut)+numbered(2)+"\n"; strings.Join(got, "\n")+"\n" != want {
				t.Fatalf("file holds %q, want %q", got, want)
			}
		})
	}
}

func TestOpenStepsOverLinesOfZeroesLeftByAPowerFailure(t *testing.T) {
	zeroes := strings.Repeat("\x00", 4<<10)
	for name, c := range map[string]struct{ content, cut, prev string }{
		"a block of zeroes as the last line": {numbered(1) + "\n" + zeroes + "\n", "", numbered(1)},
		"two lines of zeroes":                {numbered(1) + "\n\x00\x00\n" + zeroes + "\n", "", numbered(1)},
		"zeroes then a partial line":         {numbered(1) + "\n" + zeroes + "\n" + `{"n":2,"x`, `{"n":2,"x`, numbered(1)},
		"zeroes then a complete line":        {numbered(1) + "\n" + zeroes + "\n" + numbered(3) + "\n", "", numbered(3)},
		// The chain goes on from the newest rotated file.
		"zeroes only": {zeroes + "\n", "", numbered(0)},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path+".1", []byte(numbered(0)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			w := open(t, jsonlog.Options{Path: path, Fsync: jsonlog.FsyncInterval, MaxSize: 1 << 20})
			if got := string(w.Recovered()); got != c.cut {
				t.Fatalf("Recovered() = %q, want %q", got, c.cut)
			}
			if got := string(w.LastLine()); got != c.prev {
				t.Fatalf("LastLine() = %q, want %q", got, c.prev)
			}
			mustAppend(t, w, "", numbered(9))
			closeWriter(t, w)
			// The zeroes stay: Open cuts no complete line.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimSuffix(c.content, c.cut) + numbered(9) + "\n"; string(data) != want {
				t.Fatalf("file holds %q, want %q", data, want)
			}
		})
	}
}
