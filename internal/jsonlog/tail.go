package jsonlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// completeEnd returns the offset just past the last newline among the first size bytes of
// f: everything after it is a partial line.
func completeEnd(f io.ReaderAt, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		return size, nil
	}
	return lineStart(f, size)
}

// lineStart returns the offset where the line holding byte end-1 starts: just past the
// newline before it, or 0. It reads backwards in chunks so that it costs the length of
// that line, not of the file.
func lineStart(f io.ReaderAt, end int64) (int64, error) {
	buf := make([]byte, scanChunk)
	for end > 0 {
		n := min(end, int64(len(buf)))
		chunk := buf[:n]
		if _, err := f.ReadAt(chunk, end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return end - n + int64(i) + 1, nil
		}
		end -= n
	}
	return 0, nil
}

// lastLine returns the last line (without its newline) of the first end bytes of f, which
// end with a newline or are empty.
func lastLine(f io.ReaderAt, end int64) ([]byte, error) {
	if end == 0 {
		return nil, nil
	}
	start, err := lineStart(f, end-1)
	if err != nil {
		return nil, err
	}
	line := make([]byte, end-1-start)
	if _, err := f.ReadAt(line, start); err != nil {
		return nil, err
	}
	return line, nil
}

// lastLineOfFile returns the last complete line of the file at path, nil if it has none
// or does not exist.
func lastLineOfFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open rotated log %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat rotated log %s: %w", path, err)
	}
	end, err := completeEnd(f, info.Size())
	if err != nil {
		return nil, fmt.Errorf("read rotated log %s: %w", path, err)
	}
	line, err := lastLine(f, end)
	if err != nil {
		return nil, fmt.Errorf("read last line of rotated log %s: %w", path, err)
	}
	return line, nil
}
