package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
)

const identity = "system:serviceaccount:forgejo-runners:operator"

// tickingClock returns a clock a second further on at each call, in a zone other than
// UTC so that the conversion shows.
func tickingClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func openLog(t *testing.T, path string) *audit.Log {
	t.Helper()
	l, err := audit.Open(path, identity, tickingClock())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return l
}

func closeLog(t *testing.T, l *audit.Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// sampleRecord returns the i-th of a varied series of records.
func sampleRecord(i int) audit.Record {
	actions := []string{audit.ActionRegistrationCreated, audit.ActionPodCreated, audit.ActionPodDeleted, audit.ActionRegistrationDeleted}
	return audit.Record{
		Action:    actions[i%len(actions)],
		Namespace: "ci",
		Pool:      "linux-amd64",
		Runner:    fmt.Sprintf("linux-amd64-%d", i),
		Object:    fmt.Sprintf("registration %d", 40+i),
		Actor:     audit.Actor{Trigger: "poll"},
		Details:   map[string]string{"labels": "docker,ubuntu-latest"},
	}
}

func writeRecords(t *testing.T, path string, n int) {
	t.Helper()
	l := openLog(t, path)
	for i := range n {
		if err := l.Record(sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeLog(t, l)
}

// writtenLog writes a log of n records in a new directory and returns its path and bytes.
func writtenLog(t *testing.T, n int) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, n)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

func verifyFile(t *testing.T, path string, opts audit.VerifyOptions) audit.Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	rep, err := audit.Verify(f, opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func verifyBytes(t *testing.T, data []byte, opts audit.VerifyOptions) audit.Report {
	t.Helper()
	rep, err := audit.Verify(bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func requireOK(t *testing.T, rep audit.Report, records uint64) {
	t.Helper()
	if rep.Problem != nil {
		t.Fatalf("intact log reported a problem at line %d (seq %d): %s", rep.Problem.Line, rep.Problem.Seq, rep.Problem.Message)
	}
	if rep.Records != records || rep.LastSeq != records {
		t.Fatalf("report has %d records, last seq %d, want %d", rep.Records, rep.LastSeq, records)
	}
}

func requireProblem(t *testing.T, rep audit.Report, line int, seq uint64, message string) {
	t.Helper()
	if rep.Problem == nil {
		t.Fatalf("damaged log verified: %+v", rep)
	}
	p := rep.Problem
	if p.Line != line || p.Seq != seq || p.Message != message {
		t.Fatalf("problem at line %d (seq %d): %q\nwant line %d (seq %d): %q", p.Line, p.Seq, p.Message, line, seq, message)
	}
}

// lines returns the lines of a file, each with its newline.
func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte{'\n'})[:bytes.Count(data, []byte{'\n'})]
}

func decode(t *testing.T, line []byte) audit.Record {
	t.Helper()
	var r audit.Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return r
}

func hashOf(line []byte) string {
	sum := sha256.Sum256(bytes.TrimSuffix(line, []byte{'\n'}))
	return hex.EncodeToString(sum[:])
}

func TestRecordsFormAChainThatVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, path)
	if seq, hash := l.Head(); seq != 0 || hash != "" {
		t.Fatalf("empty log Head() = %d, %q", seq, hash)
	}
	const n = 200
	for i := range n {
		if err := l.Record(sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	other := sampleRecord(0)
	other.Actor.Identity = "someone-else"
	if err := l.Record(other); err != nil {
		t.Fatal(err)
	}
	headSeq, headHash := l.Head()
	closeLog(t, l)

	ls := lines(t, path)
	if len(ls) != n+1 {
		t.Fatalf("%d lines, want %d", len(ls), n+1)
	}
	prev := audit.GenesisHash
	for i, line := range ls {
		r := decode(t, line)
		if r.Seq != uint64(i+1) || r.Prev != prev {
			t.Fatalf("line %d has seq %d prev %s, want seq %d prev %s", i+1, r.Seq, r.Prev, i+1, prev)
		}
		prev = hashOf(line)
	}
	first := decode(t, ls[0])
	if first.Actor.Identity != identity || first.Runner != "linux-amd64-0" || first.Details["labels"] != "docker,ubuntu-latest" {
		t.Fatalf("first record %+v lost a field or the default identity", first)
	}
	if first.Time.Location() != time.UTC || !bytes.Contains(ls[0], []byte(`"time":"2026-03-01T11:00:01Z"`)) {
		t.Fatalf("first line %s: time not stamped from the clock in UTC", ls[0])
	}
	if got := decode(t, ls[n]).Actor.Identity; got != "someone-else" {
		t.Fatalf("an explicit identity became %q", got)
	}
	if headSeq != n+1 || headHash != prev {
		t.Fatalf("Head() = %d, %s, want %d, %s", headSeq, headHash, n+1, prev)
	}

	rep := verifyFile(t, path, audit.VerifyOptions{MinRecords: n + 1, Head: headHash})
	requireOK(t, rep, n+1)
	if rep.Head != headHash {
		t.Fatalf("report head %s, want %s", rep.Head, headHash)
	}
}

func TestRecordRequiresAnAction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, path)
	defer closeLog(t, l)
	if err := l.Record(audit.Record{Object: "pod ci/x"}); err == nil {
		t.Fatal("a record without an action was accepted")
	}
	if seq, _ := l.Head(); seq != 0 {
		t.Fatalf("Head() seq %d after a rejected record", seq)
	}
}

func TestRecordAfterCloseFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 1)
	l := openLog(t, path)
	closeLog(t, l)
	if err := l.Record(sampleRecord(1)); err == nil {
		t.Fatal("Record after Close succeeded")
	}
	if got := len(lines(t, path)); got != 1 {
		t.Fatalf("%d lines, want 1", got)
	}
}

func TestEditingAnyByteOfAMiddleLineIsCaught(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 5)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(t, path)
	start := len(ls[0]) + len(ls[1])
	// Every byte of line 3 but its newline: the line itself turns invalid, or line 4 no
	// longer links to it.
	for i := start; i < start+len(ls[2])-1; i++ {
		edited := bytes.Clone(orig)
		edited[i] ^= 0x01
		rep := verifyBytes(t, edited, audit.VerifyOptions{})
		if rep.Problem == nil || (rep.Problem.Line != 3 && rep.Problem.Line != 4) {
			t.Fatalf("byte %d of line 3 changed from %q to %q: report %+v, want a problem at line 3 or 4", i-start, orig[i], edited[i], rep.Problem)
		}
	}
}

func TestAChangedFieldBreaksTheNextLink(t *testing.T) {
	path, data := writtenLog(t, 10)
	ls := lines(t, path)
	edited := bytes.Replace(ls[6], []byte(`"registration 46"`), []byte(`"registration 99"`), 1)
	if bytes.Equal(edited, ls[6]) {
		t.Fatalf("line 7 %s does not name registration 46", ls[6])
	}
	data = bytes.Replace(data, ls[6], edited, 1)
	rep := verifyBytes(t, data, audit.VerifyOptions{})
	requireProblem(t, rep, 8, 8, "line 8 (seq 8): link broken: line 7 was changed or a line after it was deleted")
	if rep.Records != 7 || rep.LastSeq != 7 {
		t.Fatalf("report counts %d records up to seq %d, want the 7 before the problem", rep.Records, rep.LastSeq)
	}
}

func TestAChangedSeqIsCaughtAtItsLine(t *testing.T) {
	_, data := writtenLog(t, 10)
	data = bytes.Replace(data, []byte(`{"seq":5,`), []byte(`{"seq":4,`), 1)
	requireProblem(t, verifyBytes(t, data, audit.VerifyOptions{}), 5, 4, "line 5: seq 4 follows seq 4: a line was repeated or moved")
}

func removeLine(t *testing.T, path string, index int) []byte {
	t.Helper()
	ls := lines(t, path)
	return bytes.Join(append(ls[:index:index], ls[index+1:]...), nil)
}

func TestDeletingAMiddleLineIsCaught(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 10)
	rep := verifyBytes(t, removeLine(t, path, 4), audit.VerifyOptions{})
	requireProblem(t, rep, 5, 6, "line 5: seq jumps from 4 to 6: a line is missing")

	ls := lines(t, path)
	threeGone := bytes.Join(append(ls[:4:4], ls[7:]...), nil)
	requireProblem(t, verifyBytes(t, threeGone, audit.VerifyOptions{}), 5, 8, "line 5: seq jumps from 4 to 8: 3 lines are missing")
}

func TestDeletingTheFirstLineIsCaught(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 10)
	requireProblem(t, verifyBytes(t, removeLine(t, path, 0), audit.VerifyOptions{}), 1, 2,
		"the log does not start at its first record (first seq 2): lines before it were removed")
}

func TestAFirstLineOffTheGenesisIsCaught(t *testing.T) {
	_, data := writtenLog(t, 3)
	data = bytes.Replace(data, []byte(audit.GenesisHash), []byte(strings.Repeat("1", 64)), 1)
	requireProblem(t, verifyBytes(t, data, audit.VerifyOptions{}), 1, 1,
		"line 1 (seq 1): link broken: the first record does not follow the genesis hash")
}

func TestDeletingTheLastLineIsCaughtAgainstAHighWaterMark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, path)
	for i := range 10 {
		if err := l.Record(sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	seq, head := l.Head()
	closeLog(t, l)
	cut := removeLine(t, path, 9)

	// Without a mark from outside, a shorter log is a valid log.
	requireOK(t, verifyBytes(t, cut, audit.VerifyOptions{}), 9)

	requireProblem(t, verifyBytes(t, cut, audit.VerifyOptions{MinRecords: seq}), 0, 9,
		"the log ends at seq 9 but at least 10 records were written: it was truncated")
	requireProblem(t, verifyBytes(t, cut, audit.VerifyOptions{Head: head}), 0, 9,
		"the log does not hold the line with hash "+head+": it was truncated or rewritten")
	requireProblem(t, verifyBytes(t, nil, audit.VerifyOptions{MinRecords: 1}), 0, 0,
		"the log ends at seq 0 but at least 1 record was written: it was truncated")

	// The intact log meets both marks, and still does once it has grown past them.
	requireOK(t, verifyFile(t, path, audit.VerifyOptions{MinRecords: seq, Head: strings.ToUpper(head)}), 10)
	writeRecords(t, path, 3)
	requireOK(t, verifyFile(t, path, audit.VerifyOptions{MinRecords: seq, Head: head}), 13)
}

func TestTruncationIsCaught(t *testing.T) {
	path, data := writtenLog(t, 10)
	ls := lines(t, path)
	lastStart := len(data) - len(ls[9])

	requireProblem(t, verifyBytes(t, data[:lastStart+len(ls[9])/2], audit.VerifyOptions{}), 10, 0,
		"the file is truncated: its last line is incomplete")
	// Complete JSON without its newline is still an incomplete line.
	requireProblem(t, verifyBytes(t, data[:len(data)-1], audit.VerifyOptions{}), 10, 0,
		"the file is truncated: its last line is incomplete")
	// Cut mid-line 5, all that follows gone.
	mid := len(bytes.Join(ls[:4], nil)) + 30
	requireProblem(t, verifyBytes(t, data[:mid], audit.VerifyOptions{}), 5, 0,
		"the file is truncated: its last line is incomplete")

	cutWithNewline := append(bytes.Clone(data[:lastStart+20]), '\n')
	rep := verifyBytes(t, cutWithNewline, audit.VerifyOptions{})
	if rep.Problem == nil || rep.Problem.Line != 10 || !strings.HasPrefix(rep.Problem.Message, "line 10 is not an audit record") {
		t.Fatalf("a line cut mid-JSON: %+v", rep.Problem)
	}
}

func TestVerifyRejectsLinesThatAreNotRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 3)
	valid, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"empty line":    "",
		"empty object":  "{}",
		"not JSON":      "hello",
		"no action":     fmt.Sprintf(`{"seq":4,"prev":%q}`, strings.Repeat("a", 64)),
		"uppercase hex": fmt.Sprintf(`{"seq":4,"action":"pod.created","prev":%q}`, strings.Repeat("A", 64)),
	} {
		rep := verifyBytes(t, append(bytes.Clone(valid), bad+"\n"...), audit.VerifyOptions{})
		if rep.Problem == nil || rep.Problem.Line != 4 || !strings.HasPrefix(rep.Problem.Message, "line 4 is not an audit record") {
			t.Errorf("%s: problem %+v, want line 4 is not an audit record", name, rep.Problem)
		}
	}
}

func TestVerifyAcceptsAnEmptyLog(t *testing.T) {
	rep := verifyBytes(t, nil, audit.VerifyOptions{})
	requireOK(t, rep, 0)
	if rep.Head != "" {
		t.Fatalf("empty log head %q", rep.Head)
	}
}

func TestVerifyRejectsAMalformedHead(t *testing.T) {
	if _, err := audit.Verify(strings.NewReader(""), audit.VerifyOptions{Head: "3fa2"}); err == nil {
		t.Fatal("a head that is not a SHA-256 was accepted")
	}
}

type failingReader struct{ data []byte }

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestVerifyReportsReadErrors(t *testing.T) {
	_, data := writtenLog(t, 2)
	if _, err := audit.Verify(&failingReader{data: data}, audit.VerifyOptions{}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Verify with a failing reader: %v", err)
	}
}

func TestReopenContinuesTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 3)
	ls := lines(t, path)

	l := openLog(t, path)
	if seq, hash := l.Head(); seq != 3 || hash != hashOf(ls[2]) {
		t.Fatalf("reopened Head() = %d, %s, want 3, %s", seq, hash, hashOf(ls[2]))
	}
	if err := l.Record(sampleRecord(3)); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)

	ls = lines(t, path)
	if r := decode(t, ls[3]); r.Seq != 4 || r.Prev != hashOf(ls[2]) {
		t.Fatalf("first record after reopening has seq %d prev %s, want 4 %s", r.Seq, r.Prev, hashOf(ls[2]))
	}
	writeRecords(t, path, 3)
	requireOK(t, verifyFile(t, path, audit.VerifyOptions{MinRecords: 7}), 7)
}

func TestOpenAfterACrashCutsThePartialLineAndRecordsIt(t *testing.T) {
	for _, before := range []int{0, 5} {
		t.Run(fmt.Sprintf("%d records before the crash", before), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			writeRecords(t, path, before)
			half := []byte(`{"seq":6,"time":"2026-03-01T11:00:06Z","action":"pod.cre`)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(half); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			l := openLog(t, path)
			if seq, _ := l.Head(); seq != uint64(before+1) {
				t.Fatalf("Head() seq %d after recovery, want %d", seq, before+1)
			}
			if err := l.Record(sampleRecord(before)); err != nil {
				t.Fatal(err)
			}
			closeLog(t, l)

			ls := lines(t, path)
			recovered := decode(t, ls[before])
			sum := sha256.Sum256(half)
			if recovered.Action != audit.ActionRecovered || recovered.Seq != uint64(before+1) ||
				recovered.Details["discarded_bytes"] != fmt.Sprint(len(half)) ||
				recovered.Details["discarded_sha256"] != hex.EncodeToString(sum[:]) ||
				recovered.Actor.Identity != identity {
				t.Fatalf("record after recovery: %+v", recovered)
			}
			requireOK(t, verifyFile(t, path, audit.VerifyOptions{}), uint64(before+2))
		})
	}
}

func TestOpenRefusesALogItCannotContinue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeRecords(t, path, 3)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"not":"a record"}` + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	l, err := audit.Open(path, identity, tickingClock())
	if err == nil {
		_ = l.Close()
		t.Fatal("Open continued a log whose last line is not a record")
	}
	if !strings.Contains(err.Error(), "forgejo-runner-operator audit verify") {
		t.Fatalf("error %q does not say to run audit verify", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("Open changed a log it refused")
	}
}

func TestARecordIsWrittenOncePerID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	created := sampleRecord(0)
	created.ID = "registration.created/ci/linux-amd64-0"

	l := openLog(t, path)
	for range 2 {
		if err := l.Record(created); err != nil {
			t.Fatal(err)
		}
	}
	closeLog(t, l)

	l = openLog(t, path)
	if err := l.Record(created); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(sampleRecord(1)); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)

	ls := lines(t, path)
	if len(ls) != 2 || decode(t, ls[0]).ID != created.ID {
		t.Fatalf("lines %q, want the record with id %s once and one more", ls, created.ID)
	}
	requireOK(t, verifyFile(t, path, audit.VerifyOptions{}), 2)
}

func TestConcurrentRecordsKeepTheChainValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, path)
	const writers, perWriter, shared = 16, 40, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				r := sampleRecord(g*perWriter + i)
				if i < shared {
					// Every writer retries the same actions: each is recorded once.
					r.ID = fmt.Sprintf("shared-%d", i)
				}
				if err := l.Record(r); err != nil {
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
	seq, head := l.Head()
	closeLog(t, l)

	const want = writers*(perWriter-shared) + shared
	rep := verifyFile(t, path, audit.VerifyOptions{MinRecords: want})
	requireOK(t, rep, want)
	if seq != want || head != rep.Head {
		t.Fatalf("Head() = %d, %s; the log ends at %d, %s", seq, head, rep.LastSeq, rep.Head)
	}
}
