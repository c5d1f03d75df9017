package jsonlog

import (
	"os"
	"testing"
	"time"
)

// Names and durations the tests check against.
const (
	NextSuffix          = nextSuffix
	DroppedSuffix       = droppedSuffix
	RotateRetryInterval = rotateRetryInterval
)

// EachLineBackward is eachLineBackward.
var EachLineBackward = eachLineBackward

// SetNow replaces the clock w decides on rotation retries with.
func SetNow(w *Writer, now func() time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = now
}

// SetRename replaces os.Rename for the rest of the test.
func SetRename(t testing.TB, fn func(from, to string) error) { replace(t, &renameFile, fn) }

// SetLink replaces os.Link for the rest of the test.
func SetLink(t testing.TB, fn func(from, to string) error) { replace(t, &linkFile, fn) }

// SetWrite replaces (*os.File).Write for the rest of the test.
func SetWrite(t testing.TB, fn func(f *os.File, b []byte) (int, error)) { replace(t, &writeFile, fn) }

// SetTruncate replaces (*os.File).Truncate for the rest of the test.
func SetTruncate(t testing.TB, fn func(f *os.File, size int64) error) { replace(t, &truncateFile, fn) }

func replace[T any](t testing.TB, v *T, with T) {
	old := *v
	*v = with
	t.Cleanup(func() { *v = old })
}
