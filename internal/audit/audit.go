// Package audit keeps a tamper-evident record of what the operator did to Forgejo and the
// cluster. Each line of the log is a Record carrying the SHA-256 of the line before it, so
// changing or removing a line breaks the chain at a place Verify can name; removing lines
// from the end is caught by comparing with a high-water mark kept elsewhere (see
// VerifyOptions).
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
)

// Actions recorded by the operator.
const (
	ActionRegistrationCreated = "registration.created"
	ActionRegistrationDeleted = "registration.deleted"
	ActionPodCreated          = "pod.created"
	ActionPodDeleted          = "pod.deleted"
	ActionVMCreated           = "vm.created"
	ActionVMDestroyed         = "vm.destroyed"
	ActionPoolCreated         = "pool.created"
	ActionPoolChanged         = "pool.changed"
	ActionPoolDeleted         = "pool.deleted"
	// ActionRecovered records that Open cut an incomplete last line, so that the cut is
	// itself on the record.
	ActionRecovered = "audit.recovered"
	// ActionRegistrationAbandoned records a Runner let go at its deregistration deadline with its
	// registration possibly left in Forgejo, for the pool's garbage collection.
	ActionRegistrationAbandoned = "registration.abandoned"
)

// GenesisHash is the prev of a log's first record.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Actor says who did something and why.
type Actor struct {
	// Identity is the operator's identity, e.g. system:serviceaccount:ns:name or a pod name.
	Identity string `json:"identity"`
	// Trigger is what caused the action: "webhook delivery 7f3c…", "poll",
	// "spec change (generation 3) by kubectl-client-side-apply", "runner ended: Succeeded",
	// "garbage collection", "pool deleted".
	Trigger string `json:"trigger"`
}

// Record is one line of the audit log.
//
// The log is kept for as long as anyone may ask what happened and can be read by whoever
// audits the operator: callers put names and ids in it, never a token, a registration
// secret or anything else that grants access. The log cannot tell a secret from a name.
type Record struct {
	// Seq numbers records from 1; Log.Record sets it.
	Seq uint64 `json:"seq"`
	// Time is when the record was written, in UTC; Log.Record sets it.
	Time time.Time `json:"time"`
	// ID is an idempotency key: the same action retried after a crash is recorded once.
	ID        string `json:"id,omitempty"`
	Action    string `json:"action"`
	Namespace string `json:"namespace,omitempty"`
	Pool      string `json:"pool,omitempty"`
	Runner    string `json:"runner,omitempty"`
	// Object is what was acted on, e.g. "registration 42 (uuid …)" or "pod ns/name".
	Object  string            `json:"object,omitempty"`
	Actor   Actor             `json:"actor"`
	Details map[string]string `json:"details,omitempty"`
	// Prev is the SHA-256, in lowercase hex, of the previous line without its newline,
	// or GenesisHash; Log.Record sets it.
	Prev string `json:"prev"`
}

// Log appends Records to an audit log file. Its methods are safe for concurrent use.
type Log struct {
	w        *jsonlog.Writer
	identity string
	clock    func() time.Time

	mu   sync.Mutex
	seq  uint64
	head string
}

// Open opens or creates the audit log at path and continues its chain. identity fills
// Actor.Identity when a record leaves it empty; clock (time.Now when nil) stamps records.
//
// A last line cut short by a crash is removed and an ActionRecovered record says how many
// bytes went and their hash. A log whose last complete line is not a record is refused:
// appending to it would hide the damage behind a fresh chain.
func Open(path, identity string, clock func() time.Time) (*Log, error) {
	if clock == nil {
		clock = time.Now
	}
	w, err := jsonlog.Open(jsonlog.Options{Path: path, Fsync: jsonlog.FsyncAlways})
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	discarded := w.Recovered()
	l := &Log{w: w, identity: identity, clock: clock}
	if last := w.LastLine(); last != nil {
		rec, err := parseRecord(last)
		if err != nil {
			_ = w.Close()
			cut := ""
			if discarded != nil {
				cut = fmt.Sprintf(" (an incomplete line of %d bytes after it, SHA-256 %s, was cut off)", len(discarded), hashLine(discarded))
			}
			return nil, fmt.Errorf("open audit log %s: its last line is not an audit record%s: %w; run `forgejo-runner-operator audit verify %s` to find the damage",
				path, cut, err, path)
		}
		l.seq, l.head = rec.Seq, hashLine(last)
	}
	if discarded != nil {
		err := l.Record(Record{
			Action: ActionRecovered,
			Object: "audit log " + path,
			Actor:  Actor{Trigger: "open after an interrupted write"},
			Details: map[string]string{
				"discarded_bytes":  strconv.Itoa(len(discarded)),
				"discarded_sha256": hashLine(discarded),
			},
		})
		if err != nil {
			_ = w.Close()
			return nil, err
		}
	}
	return l, nil
}

// Record appends r, filling Seq, Time, Prev and, when empty, Actor.Identity. A record
// whose ID was already written is skipped without error, so an action retried after a
// crash is recorded once.
func (l *Log) Record(r Record) error {
	if r.Action == "" {
		return errors.New("audit record without an action")
	}
	if r.Actor.Identity == "" {
		r.Actor.Identity = l.identity
	}
	var line []byte
	written, err := l.w.AppendFunc(r.ID, func(prev []byte) ([]byte, error) {
		// The seq comes from the previous line itself, read under the writer's lock: a
		// counter kept beside it could be stale when a write failed or raced.
		r.Seq, r.Prev = 1, GenesisHash
		if prev != nil {
			p, err := parseRecord(prev)
			if err != nil {
				return nil, fmt.Errorf("previous line is not an audit record: %w", err)
			}
			r.Seq, r.Prev = p.Seq+1, hashLine(prev)
		}
		r.Time = l.clock().UTC()
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode audit record: %w", err)
		}
		line = b
		return b, nil
	})
	if written {
		l.advanceHead(r.Seq, hashLine(line))
	}
	if err != nil {
		return fmt.Errorf("record %s in audit log: %w", r.Action, err)
	}
	return nil
}

// advanceHead moves the head forward only: concurrent Records may report out of order.
func (l *Log) advanceHead(seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.seq {
		l.seq, l.head = seq, hash
	}
}

// Head returns the seq and line hash of the last record, (0, "") for an empty log. The
// operator exports the seq as a gauge: its high-water mark, kept outside the log's host,
// is what VerifyOptions.MinRecords checks against.
func (l *Log) Head() (seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.head
}

// Path returns the file the log appends to.
func (l *Log) Path() string {
	return l.w.Path()
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	if err := l.w.Close(); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}

func hashLine(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// parseRecord decodes a line and checks it has what every record has.
func parseRecord(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return r, err
	}
	switch {
	case r.Seq == 0:
		return r, errors.New("it has no seq")
	case r.Action == "":
		return r, errors.New("it has no action")
	case !isHash(r.Prev):
		return r, fmt.Errorf("its prev %q is not a SHA-256 in lowercase hex", r.Prev)
	}
	return r, nil
}

func isHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
