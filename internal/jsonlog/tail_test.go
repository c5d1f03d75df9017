package jsonlog_test

import (
	"bytes"
	"runtime"
	"slices"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
)

func TestReadingALongLineBackwardCostsItsLengthNotItsSquare(t *testing.T) {
	const long = 8 << 20
	longLine := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), long)...), `"}`...)
	var content []byte
	for _, l := range [][]byte{[]byte(`{"id":"a"}`), longLine, []byte(`{"id":"b"}`)} {
		content = append(append(content, l...), '\n')
	}
	r := bytes.NewReader(content)
	var lens []int
	var longOK bool
	fn := func(line []byte) bool {
		lens = append(lens, len(line))
		if len(line) == len(longLine) {
			longOK = bytes.Equal(line, longLine)
		}
		return true
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	read, err := jsonlog.EachLineBackward(r, int64(len(content)), 64<<20, fn)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if read != int64(len(content)) {
		t.Fatalf("read %d bytes, want all %d", read, len(content))
	}
	if want := []int{len(`{"id":"b"}`), len(longLine), len(`{"id":"a"}`)}; !slices.Equal(lens, want) || !longOK {
		t.Fatalf("lines of %d bytes (long one intact: %v), want %d", lens, longOK, want)
	}
	// Reading the file once and joining the long line once is 16 MiB. Copying what was
	// read of the line again for each chunk is over 100 MiB.
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 4*long {
		t.Fatalf("reading %d bytes backward allocated %d MiB, want at most %d MiB", len(content), allocated>>20, 4*long>>20)
	}
}
