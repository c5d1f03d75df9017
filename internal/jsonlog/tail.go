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

// lastRecord is lastLine for the last line that is not made of NUL bytes only, and
// returns where that line ends too, 0 when there is none. A power failure can leave such
// a line inside a file: where data that the file's size already counted was lost, some
// file systems show zeroes, and when a later line survived, the newline that ends it
// makes the zeroes a complete line. Such lines are damage to step over, not a sign that
// the file is not a log; they are left in place, as cutting them would cut the lines
// after them. They are stepped over for at most maxCut bytes, like a partial last line
// (see maxCut): more zeroes than that are left for lastLine to judge.
func lastRecord(f io.ReaderAt, end int64, jsonText bool) (line []byte, recordEnd int64, err error) {
	budget := int64(maxCut)
	for end > 0 {
		start, err := nulLineStart(f, end, budget)
		if errors.Is(err, errNotNULLine) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		budget -= end - start
		end = start
	}
	line, err = lastLine(f, end, jsonText)
	return line, end, err
}

// errNotNULLine is nulLineStart finding a line that is not one of NUL bytes only.
var errNotNULLine = errors.New("not a line of NUL bytes")

// nulLineStart returns where the last line of the first end bytes of f, which end with a
// newline, starts when it holds at least one byte and only NUL bytes, and fails with
// errNotNULLine otherwise, also when the line and its newline are longer than maxLen.
func nulLineStart(f io.ReaderAt, end, maxLen int64) (int64, error) {
	// The last line is almost always a JSON object, which its last byte shows: the first
	// read is small.
	buf := make([]byte, 512, scanChunk)
	lineEnd := end - 1 // the newline
	from := lineEnd
	for from > 0 {
		if end-from >= maxLen {
			return 0, errNotNULLine
		}
		n := min(from, int64(len(buf)), maxLen-(end-from))
		chunk := buf[:n]
		buf = buf[:cap(buf)]
		if _, err := f.ReadAt(chunk, from-n); err != nil {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			switch chunk[i] {
			case 0:
			case '\n':
				start := from - n + int64(i) + 1
				if start == lineEnd {
					return 0, errNotNULLine // an empty line
				}
				return start, nil
			default:
				return 0, errNotNULLine
			}
		}
		from -= n
	}
	if lineEnd == 0 {
		return 0, errNotNULLine // an empty line
	}
	return 0, nil
}

// lastLineOfFile returns the last complete line of the file at path, stepping over lines
// of NUL bytes (see lastRecord), nil if it has none or does not exist.
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
	line, _, err := lastRecord(f, end, false)
	if err != nil {
		return nil, fmt.Errorf("read last line of rotated log %s: %w", path, err)
	}
	return line, nil
}

// eachLineBackward calls fn with the complete lines (without their newline) among the
// first size bytes of f, last first, until fn returns false or limit bytes were read. A
// line that starts before the limit is not passed on. The line fn gets is only valid
// during the call. It returns how many bytes it read.
//
// It costs the bytes it reads, however long the lines: the chunks of a line longer than
// one are kept apart until its start is found, and then joined once.
func eachLineBackward(f io.ReaderAt, size, limit int64, fn func(line []byte) bool) (int64, error) {
	// carry holds the end of a line whose start is not read yet, as the chunks it was
	// read in, last first. Until the first newline is found it is what follows the last
	// one: a partial line, never passed on.
	var carry [][]byte
	afterNewline := false
	from, read := size, int64(0)
	for from > 0 && read < limit {
		n := min(from, int64(idChunk), limit-read)
		// A new buffer each time, as carry may hold parts of the last one.
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, from-n); err != nil {
			return read, err
		}
		from, read = from-n, read+n
		for {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				break
			}
			if afterNewline && !fn(joinBackward(buf[i+1:], carry)) {
				return read, nil
			}
			clear(carry) // lets the chunks go
			afterNewline, carry = true, carry[:0]
			buf = buf[:i]
		}
		if len(buf) > 0 {
			carry = append(carry, buf)
		}
	}
	if from == 0 && afterNewline {
		// The file's first line, which has no newline before it.
		fn(joinBackward(nil, carry))
	}
	return read, nil
}

// joinBackward returns start followed by the chunks of rest, which are last first. It
// copies only when there is more than one piece.
func joinBackward(start []byte, rest [][]byte) []byte {
	if len(rest) == 0 {
		return start
	}
	if len(start) == 0 && len(rest) == 1 {
		return rest[0]
	}
	n := len(start)
	for _, c := range rest {
		n += len(c)
	}
	line := make([]byte, 0, n)
	line = append(line, start...)
	for i := len(rest) - 1; i >= 0; i-- {
		line = append(line, rest[i]...)
	}
	return line
}
