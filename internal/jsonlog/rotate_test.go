package jsonlog_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
)

// fixedLine returns line i, all of them lineLen bytes long with their newline.
func fixedLine(i int) string { return fmt.Sprintf(`{"n":"%04d"}`, i) }

const fixedLineLen = len(`{"n":"0000"}` + "\n")

func fixedLines(from, to int) []string {
	var ls []string
	for i := from; i <= to; i++ {
		ls = append(ls, fixedLine(i))
	}
	return ls
}

// rotatedLog opens a log of four lines a file and two rotated files, and writes lines 1-12
// to it: path.2 holds 1-4, path.1 5-8 and path 9-12. Its clock stands still until moved.
func rotatedLog(t *testing.T) (w *jsonlog.Writer, path string, clock *time.Time) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "events.jsonl")
	w = open(t, jsonlog.Options{Path: path, MaxSize: 4 * int64(fixedLineLen), MaxFiles: 2})
	clock = new(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	jsonlog.SetNow(w, func() time.Time { return *clock })
	for i := 1; i <= 12; i++ {
		mustAppend(t, w, "", fixedLine(i))
	}
	requireFiles(t, path, fixedLines(9, 12), fixedLines(5, 8), fixedLines(1, 4))
	return w, path, clock
}

// requireFiles fails unless path, path.1 and path.2 hold want, newest first, and no
// rotation left a file of its own behind.
func requireFiles(t *testing.T, path string, want ...[]string) {
	t.Helper()
	files := rotationFiles(t, path, 2)
	if len(files) != len(want) {
		t.Fatalf("%d files %q, want %d: %q", len(files), files, len(want), want)
	}
	for i := range want {
		if !slices.Equal(files[i], want[i]) {
			t.Fatalf("file %d holds %q, want %q", i, files[i], want[i])
		}
	}
	for _, suffix := range []string{jsonlog.NextSuffix, jsonlog.DroppedSuffix} {
		// A directory is what a test put there to make the rotation fail.
		if info, err := os.Lstat(path + suffix); err == nil && !info.IsDir() {
			t.Fatalf("%s%s was left behind", path, suffix)
		}
	}
	if a, errA := os.Stat(path); errA == nil {
		if b, errB := os.Stat(path + ".1"); errB == nil && os.SameFile(a, b) {
			t.Fatalf("%s and %s.1 are one file", path, path)
		}
	}
}

func TestAFailedRotationLosesNoHistoryAndIsRetriedLater(t *testing.T) {
	w, path, clock := rotatedLog(t)
	defer closeWriter(t, w)
	// A directory where the rotation creates its next file makes the creation fail, also
	// for root.
	blocker := path + jsonlog.NextSuffix
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}

	written, err := w.Append("", []byte(fixedLine(13)))
	if !written || err == nil || !strings.Contains(err.Error(), "tried again") {
		t.Fatalf("Append when the rotation fails = %v, %v: want the line written to the current file and an error saying rotating is tried again", written, err)
	}
	// Until the retry interval is over, lines go on to the current file without an error:
	// a rotation that failed is not tried again for each of them.
	for i := 14; i <= 20; i++ {
		mustAppend(t, w, "", fixedLine(i))
	}
	requireFiles(t, path, fixedLines(9, 20), fixedLines(5, 8), fixedLines(1, 4))

	*clock = clock.Add(jsonlog.RotateRetryInterval)
	if written, err := w.Append("", []byte(fixedLine(21))); !written || err == nil {
		t.Fatalf("Append when the rotation fails again = %v, %v, want written with an error", written, err)
	}
	requireFiles(t, path, fixedLines(9, 21), fixedLines(5, 8), fixedLines(1, 4))

	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, w, "", fixedLine(22))
	requireFiles(t, path, fixedLines(9, 22), fixedLines(5, 8), fixedLines(1, 4))
	*clock = clock.Add(jsonlog.RotateRetryInterval)
	mustAppend(t, w, "", fixedLine(23))
	requireFiles(t, path, fixedLines(23, 23), fixedLines(9, 22), fixedLines(5, 8))
}

func TestARotationThatFailsHalfWayPutsEveryFileBack(t *testing.T) {
	eio := syscall.EIO
	for name, fail := range map[string]func(t *testing.T, path string){
		"dropping the oldest": func(t *testing.T, path string) {
			jsonlog.SetRename(t, func(from, to string) error {
				if from == path+".2" {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: eio}
				}
				return os.Rename(from, to)
			})
		},
		"moving path.1 on": func(t *testing.T, path string) {
			jsonlog.SetRename(t, func(from, to string) error {
				if from == path+".1" {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: eio}
				}
				return os.Rename(from, to)
			})
		},
		"naming the current file path.1": func(t *testing.T, path string) {
			jsonlog.SetLink(t, func(from, to string) error {
				return &os.LinkError{Op: "link", Old: from, New: to, Err: eio}
			})
		},
		"renaming instead, without hard links": func(t *testing.T, path string) {
			jsonlog.SetLink(t, func(from, to string) error {
				return &os.LinkError{Op: "link", Old: from, New: to, Err: syscall.EPERM}
			})
			jsonlog.SetRename(t, func(from, to string) error {
				if from == path+jsonlog.NextSuffix {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: eio}
				}
				return os.Rename(from, to)
			})
		},
		"putting the next file in place": func(t *testing.T, path string) {
			jsonlog.SetRename(t, func(from, to string) error {
				if from == path+jsonlog.NextSuffix {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: eio}
				}
				return os.Rename(from, to)
			})
		},
	} {
		t.Run(name, func(t *testing.T) {
			w, path, _ := rotatedLog(t)
			defer closeWriter(t, w)
			fail(t, path)
			written, err := w.Append("", []byte(fixedLine(13)))
			if !written || !errors.Is(err, eio) {
				t.Fatalf("Append = %v, %v, want the line written to the current file and the rotation's error", written, err)
			}
			requireFiles(t, path, fixedLines(9, 13), fixedLines(5, 8), fixedLines(1, 4))
		})
	}
}

func TestARotationThatCannotBeUndoneIsRepairedByALaterAppend(t *testing.T) {
	w, path, clock := rotatedLog(t)
	defer closeWriter(t, w)
	failing := true
	jsonlog.SetRename(t, func(from, to string) error {
		// The next file cannot take path, nor can path.2 go back to being path.1.
		if failing && (from == path+jsonlog.NextSuffix || from == path+".2" && to == path+".1") {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: syscall.EIO}
		}
		return os.Rename(from, to)
	})
	for i := 13; i <= 14; i++ {
		written, err := w.Append("", []byte(fixedLine(i)))
		if written || err == nil || !strings.Contains(err.Error(), "putting the files back failed") {
			t.Fatalf("Append %d = %v, %v, want nothing written and an error saying the files could not be put back", i, written, err)
		}
	}

	// The files are back in place; rotating waits for the retry interval.
	failing = false
	mustAppend(t, w, "", fixedLine(15))
	requireFiles(t, path, append(fixedLines(9, 12), fixedLine(15)), fixedLines(5, 8), fixedLines(1, 4))
	*clock = clock.Add(jsonlog.RotateRetryInterval)
	mustAppend(t, w, "", fixedLine(16))
	requireFiles(t, path, fixedLines(16, 16), append(fixedLines(9, 12), fixedLine(15)), fixedLines(5, 8))
}

func TestAPartialWriteThatCannotBeCutIsCutByALaterAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w := open(t, jsonlog.Options{Path: path})
	defer closeWriter(t, w)
	mustAppend(t, w, "", numbered(1))

	full := errors.New("no space left on device")
	jsonlog.SetWrite(t, func(f *os.File, b []byte) (int, error) {
		n, _ := f.Write(b[:len(b)/2])
		return n, full
	})
	cutting := false
	jsonlog.SetTruncate(t, func(f *os.File, size int64) error {
		if !cutting {
			return full
		}
		return f.Truncate(size)
	})
	if written, err := w.Append("", []byte(numbered(2))); written || !errors.Is(err, full) {
		t.Fatalf("Append of a line half written = %v, %v, want the write's error", written, err)
	}
	jsonlog.SetWrite(t, (*os.File).Write)
	if written, err := w.Append("", []byte(numbered(3))); written || err == nil || !strings.Contains(err.Error(), "partial line") {
		t.Fatalf("Append after a partial line that could not be cut = %v, %v, want an error about the partial line", written, err)
	}

	cutting = true
	mustAppend(t, w, "", numbered(4))
	if got, want := readLines(t, path), []string{numbered(1), numbered(4)}; !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

func TestOpenRemovesASecondNameLeftByAnInterruptedRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	opts := jsonlog.Options{Path: path, MaxSize: 1 << 10, MaxFiles: 3}
	w := open(t, opts)
	mustAppend(t, w, "", numbered(1))
	closeWriter(t, w)
	// A crash right after a rotation linked the current file to path.1.
	if err := os.Link(path, path+".1"); err != nil {
		t.Skipf("this file system has no hard links: %v", err)
	}
	w = open(t, opts)
	mustAppend(t, w, "", numbered(2))
	closeWriter(t, w)
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatalf("%s.1, a second name of %s, was kept", path, path)
	}
	if got, want := readLines(t, path), []string{numbered(1), numbered(2)}; !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

func TestRotationWorksWithoutHardLinks(t *testing.T) {
	jsonlog.SetLink(t, func(from, to string) error {
		// What Linux says on a file system without hard links.
		return &os.LinkError{Op: "link", Old: from, New: to, Err: syscall.EPERM}
	})
	w, path, _ := rotatedLog(t)
	mustAppend(t, w, "", fixedLine(13))
	requireFiles(t, path, fixedLines(13, 13), fixedLines(9, 12), fixedLines(5, 8))
	if second, err := jsonlog.Open(jsonlog.Options{Path: path}); err == nil {
		_ = second.Close()
		t.Fatal("a second Open succeeded after a rotation by renaming: the new file is not locked")
	}
	closeWriter(t, w)
}

func TestOpenFinishesOrUndoesARotationInterruptedAfterDroppingTheOldest(t *testing.T) {
	mv := func(t *testing.T, from, to string) {
		t.Helper()
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	// Each crash happens in the middle of rotating a log whose path.2 holds 1-4, path.1
	// 5-8 and path 9-12 (see rotateLocked), after path.2 became path.dropped.
	for name, c := range map[string]struct {
		crash func(t *testing.T, path string)
		// want is what the files hold after Open, newest first.
		want [][]string
	}{
		"before moving the others on": {
			crash: func(t *testing.T, path string) {},
			want:  [][]string{fixedLines(9, 12), fixedLines(5, 8), fixedLines(1, 4)},
		},
		"after moving path.1 on": {
			crash: func(t *testing.T, path string) { mv(t, path+".1", path+".2") },
			want:  [][]string{fixedLines(9, 12), fixedLines(5, 8), fixedLines(1, 4)},
		},
		"after naming the current file path.1": {
			crash: func(t *testing.T, path string) {
				mv(t, path+".1", path+".2")
				if err := os.Link(path, path+".1"); err != nil {
					t.Skipf("this file system has no hard links: %v", err)
				}
			},
			want: [][]string{fixedLines(9, 12), fixedLines(5, 8), fixedLines(1, 4)},
		},
		"after the next file took path": {
			crash: func(t *testing.T, path string) {
				mv(t, path+".1", path+".2")
				mv(t, path, path+".1")
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: [][]string{nil, fixedLines(9, 12), fixedLines(5, 8)},
		},
	} {
		t.Run(name, func(t *testing.T) {
			w, path, _ := rotatedLog(t)
			closeWriter(t, w)
			mv(t, path+".2", path+jsonlog.DroppedSuffix)
			c.crash(t, path)

			w = open(t, jsonlog.Options{Path: path, MaxSize: 4 * int64(fixedLineLen), MaxFiles: 2})
			requireFiles(t, path, c.want...)
			// The next rotation drops one file, the oldest: 1-4, and only that.
			for i := 13; i <= 16; i++ {
				mustAppend(t, w, "", fixedLine(i))
			}
			closeWriter(t, w)
			requireFiles(t, path, fixedLines(13, 16), fixedLines(9, 12), fixedLines(5, 8))
		})
	}
}
