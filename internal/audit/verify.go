package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// VerifyOptions carries what is known about a log from outside it. A chain of hashes
// cannot show that lines were removed from its end, nor that it was rewritten from
// scratch; a mark kept where the log's host cannot rewrite it can.
type VerifyOptions struct {
	// MinRecords is a seq the log is known to have reached, such as the high-water mark
	// Prometheus holds of the operator's last-seq gauge. 0 checks nothing.
	MinRecords uint64
	// Head is the hash (lowercase hex SHA-256) of a line the log is known to have held,
	// from Log.Head or an earlier Verify. The log may have grown since; it must still
	// hold that line. "" checks nothing.
	Head string
}

// Report is the outcome of Verify.
type Report struct {
	// Records counts the records that verified: all of them, or those before Problem.
	Records uint64
	// LastSeq is the seq of the last record that verified.
	LastSeq uint64
	// Head is the hash of the last line that verified, "" when none did.
	Head string
	// Problem is the first problem found, nil when the log is intact.
	Problem *Problem
}

// Problem is what is wrong with a log, and where.
type Problem struct {
	// Line is the 1-based line the problem was found at, 0 when it concerns the log as a
	// whole (it ends too early).
	Line int
	// Seq is the seq of that line, or of the last record for a whole-log problem; 0 when
	// unknown.
	Seq uint64
	// Message describes the problem and where it is, in a sentence for people.
	Message string
}

// Verify reads an audit log and reports the first problem in it. The error is for the
// reader failing or bad options, not for problems in the log.
func Verify(r io.Reader, opts VerifyOptions) (Report, error) {
	wantHead := strings.ToLower(opts.Head)
	if wantHead != "" && !isHash(wantHead) {
		return Report{}, fmt.Errorf("verify audit log: head %q is not a SHA-256 in hex", opts.Head)
	}
	headFound := wantHead == ""

	var rep Report
	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return rep, fmt.Errorf("verify audit log: read line %d: %w", lineNo, err)
		}
		if len(line) == 0 {
			break
		}
		if line[len(line)-1] != '\n' {
			rep.Problem = &Problem{Line: lineNo, Message: "the file is truncated: its last line is incomplete"}
			return rep, nil
		}
		line = line[:len(line)-1]
		rec, p := checkLine(rep, lineNo, line)
		if p != nil {
			rep.Problem = p
			return rep, nil
		}
		rep.Records++
		rep.LastSeq = rec.Seq
		rep.Head = hashLine(line)
		if rep.Head == wantHead {
			headFound = true
		}
	}

	switch {
	case opts.MinRecords > 0 && rep.LastSeq < opts.MinRecords:
		rep.Problem = &Problem{Seq: rep.LastSeq, Message: fmt.Sprintf(
			"the log ends at seq %d but at least %s written: it was truncated", rep.LastSeq, countRecords(opts.MinRecords))}
	case !headFound:
		rep.Problem = &Problem{Seq: rep.LastSeq, Message: fmt.Sprintf(
			"the log does not hold the line with hash %s: it was truncated or rewritten", wantHead)}
	}
	return rep, nil
}

// checkLine parses one complete line and checks it against the records verified before it.
func checkLine(rep Report, lineNo int, line []byte) (Record, *Problem) {
	rec, err := parseRecord(line)
	if err != nil {
		return rec, &Problem{Line: lineNo, Message: fmt.Sprintf("line %d is not an audit record: %v", lineNo, err)}
	}
	at := &Problem{Line: lineNo, Seq: rec.Seq}
	if lineNo == 1 {
		switch {
		case rec.Seq != 1:
			at.Message = fmt.Sprintf("the log does not start at its first record (first seq %d): lines before it were removed", rec.Seq)
			return rec, at
		case rec.Prev != GenesisHash:
			at.Message = "line 1 (seq 1): link broken: the first record does not follow the genesis hash"
			return rec, at
		}
		return rec, nil
	}
	switch want := rep.LastSeq + 1; {
	case rec.Seq > want:
		missing := "a line is missing"
		if rec.Seq-want > 1 {
			missing = fmt.Sprintf("%d lines are missing", rec.Seq-want)
		}
		at.Message = fmt.Sprintf("line %d: seq jumps from %d to %d: %s", lineNo, rep.LastSeq, rec.Seq, missing)
		return rec, at
	case rec.Seq < want:
		at.Message = fmt.Sprintf("line %d: seq %d follows seq %d: a line was repeated or moved", lineNo, rec.Seq, rep.LastSeq)
		return rec, at
	case rec.Prev != rep.Head:
		at.Message = fmt.Sprintf("line %d (seq %d): link broken: line %d was changed or a line after it was deleted", lineNo, rec.Seq, lineNo-1)
		return rec, at
	}
	return rec, nil
}

func countRecords(n uint64) string {
	if n == 1 {
		return "1 record was"
	}
	return fmt.Sprintf("%d records were", n)
}
