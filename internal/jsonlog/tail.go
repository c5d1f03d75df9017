package jsonlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

var (
	// errNoLineStart is lineStart giving up after the bytes it was allowed to read.
	errNoLineStart = errors.New("no line break found")
	// errNotJSONText is lineStart finding a byte that no line of JSON holds.
	errNotJSONText = errors.New("a control character JSON does not allow")
)

// completeEnd returns the offset just past the last newline among the first size bytes of
// f: everything after it is a partial line. It returns errNoLineStart when that partial
// line is longer than maxCut bytes (no limit when negative), having read little more.
func completeEnd(f io.ReaderAt, size, maxCut int64) (int64, error) {
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
	if maxCut < 0 {
		return lineStart(f, size, -1, false)
	}
	// One byte more than the longest cut, to see the newline before it.
	start, err := lineStart(f, size, maxCut+1, false)
	if err == nil && size-start > maxCut {
		err = errNoLineStart
	}
	return start, err
}

// lineStart returns the offset where the line holding byte end-1 starts: just past the
// newline before it, or 0. It reads backwards in chunks so that it costs the length of
// that line, not of the file. It gives up with errNoLineStart once it read maxLen bytes
// (no limit when negative) and, when jsonText, with errNotJSONText at a control character
// JSON forbids: a binary file then costs a chunk, not its whole size.
func lineStart(f io.ReaderAt, end, maxLen int64, jsonText bool) (int64, error) {
	buf := make([]byte, scanChunk)
	from := end
	for from > 0 {
		if maxLen >= 0 && end-from >= maxLen {
			return 0, errNoLineStart
		}
		n := min(from, int64(len(buf)))
		if maxLen >= 0 {
			n = min(n, maxLen-(end-from))
		}
		chunk := buf[:n]
		if _, err := f.ReadAt(chunk, from-n); err != nil {
			return 0, err
		}
		i := bytes.LastIndexByte(chunk, '\n')
		if jsonText && !isJSONText(chunk[i+1:]) {
			return 0, errNotJSONText
		}
		if i >= 0 {
			return from - n + int64(i) + 1, nil
		}
		from -= n
	}
	return 0, nil
}

// isJSONText reports whether b, a piece of one line, holds no control character: JSON
// allows tab and carriage return between tokens, and none inside strings.
func isJSONText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// lastLine returns the last line (without its newline) of the first end bytes of f, which
// end with a newline or are empty. When jsonText, it fails with errNotJSONText as soon as
// it meets a byte a JSON line cannot hold.
func lastLine(f io.ReaderAt, end int64, jsonText bool) ([]byte, error) {
	if end == 0 {
		return nil, nil
	}
	start, err := lineStart(f, end-1, -1, jsonText)
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
	end, err := completeEnd(f, info.Size(), -1)
	if err != nil {
		return nil, fmt.Errorf("read rotated log %s: %w", path, err)
	}
	line, err := lastLine(f, end, false)
	if err != nil {
		return nil, fmt.Errorf("read last line of rotated log %s: %w", path, err)
	}
	return line, nil
}

// eachLineBackward calls fn with the complete lines (without their newline) among the
// first size bytes of f, last first, until fn returns false or limit bytes were read. A
// line that starts before the limit is not passed on. The line fn gets is only valid
// during the call. It returns how many bytes it read.
func eachLineBackward(f io.ReaderAt, size, limit int64, fn func(line []byte) bool) (int64, error) {
	// carry is the end of a line whose start is not read yet. Until the first newline is
	// found it is what follows the last one: a partial line, never passed on.
	var carry []byte
	afterNewline := false
	from, read := size, int64(0)
	for from > 0 && read < limit {
		n := min(from, int64(idChunk), limit-read)
		buf := make([]byte, n+int64(len(carry)))
		if _, err := f.ReadAt(buf[:n], from-n); err != nil {
			return read, err
		}
		copy(buf[n:], carry)
		from, read = from-n, read+n
		for {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				break
			}
			if afterNewline && !fn(buf[i+1:]) {
				return read, nil
			}
			afterNewline = true
			buf = buf[:i]
		}
		carry = buf
	}
	if from == 0 && afterNewline {
		// The file's first line, which has no newline before it.
		fn(carry)
	}
	return read, nil
}
