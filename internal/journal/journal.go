package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
)

// Options configure a Journal. Every sink is optional.
type Options struct {
	// EventLog is the event log file; an empty Path writes none.
	EventLog jsonlog.Options
	// AuditLogPath is the audit log file; empty writes none.
	AuditLogPath string
	// Identity names the operator in audit records, e.g. its Kubernetes user and pod.
	Identity string
	// Kube receives Kubernetes Events; nil sends none.
	Kube KubeRecorder
	// Metrics are fed from the transitions; nil feeds none.
	Metrics *opmetrics.Metrics
	Log     logr.Logger
	Now     func() time.Time
}

// Journal writes transitions and audit records to their sinks. Its files are opened by the
// leader only (Start, or the first write): a replica that is not the leader must not touch a
// file the leader is appending to. A nil *Journal records nothing.
type Journal struct {
	opts Options
	kube *kubeEvents

	// files guards the open files: writers hold it shared while they append (the event log
	// and the audit log order concurrent appends themselves), so one slow fsync does not
	// queue every controller worker; opening and closing hold it alone.
	files   sync.RWMutex
	events  *jsonlog.Writer
	audit   *audit.Log
	stopped bool

	mu sync.Mutex
	// seen are the ids of the transitions sent to the sinks other than the file: with no file,
	// or a write that failed and is retried, it keeps them from hearing of one twice.
	seen *idSet
	// deletions are the reasons of the last Deleted events, by runner uid.
	deletions     map[types.UID]string
	deletionOrder []types.UID
}

// New builds a Journal; call Start (a leader-only manager runnable) to open its files.
func New(opts Options) *Journal {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	j := &Journal{opts: opts, seen: newIDSet(1 << 16)}
	if opts.Kube != nil {
		j.kube = newKubeEvents(opts.Kube, opts.Now)
	}
	return j
}

// Start opens the files, sends aggregated Kubernetes Events until ctx ends, then flushes and
// closes everything. A file that cannot be opened stops the operator: the user asked for it.
func (j *Journal) Start(ctx context.Context) error {
	j.files.Lock()
	err := errors.Join(j.openEventsLocked(), j.openAuditLocked())
	if err != nil {
		err = errors.Join(err, j.closeLocked()) // the one that did open
	}
	j.files.Unlock()
	if err != nil {
		return err
	}
	if j.kube != nil {
		j.kube.run(ctx)
	} else {
		<-ctx.Done()
	}
	j.files.Lock()
	defer j.files.Unlock()
	// Controllers stop alongside the journal and may still finish a transition: from now on
	// each write opens and closes the files itself.
	j.stopped = true
	if err := j.closeLocked(); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
}

// NeedLeaderElection keeps the files with the leader.
func (j *Journal) NeedLeaderElection() bool { return true }

func (j *Journal) openEventsLocked() error {
	if j.events != nil || j.opts.EventLog.Path == "" {
		return nil
	}
	w, err := jsonlog.Open(j.opts.EventLog)
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	if cut := w.Recovered(); len(cut) > 0 {
		j.opts.Log.Info("event log ended in a partial line, cut off", "path", w.Path(), "bytes", len(cut))
	}
	j.events = w
	return nil
}

func (j *Journal) openAuditLocked() error {
	if j.audit != nil || j.opts.AuditLogPath == "" {
		return nil
	}
	l, err := audit.Open(j.opts.AuditLogPath, j.opts.Identity, j.opts.Now)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	j.audit = l
	if j.opts.Metrics != nil {
		seq, _ := l.Head()
		j.opts.Metrics.SetAuditHead(seq)
	}
	return nil
}

func (j *Journal) closeLocked() error {
	var errs []error
	if j.events != nil {
		errs = append(errs, j.events.Close())
		j.events = nil
	}
	if j.audit != nil {
		errs = append(errs, j.audit.Close())
		j.audit = nil
	}
	return errors.Join(errs...)
}

// Runner records one transition of rn, to every sink. Call it before the transition is
// committed; a repeat of an event already recorded is dropped.
func (j *Journal) Runner(rn *v1alpha1.Runner, ev Event) {
	if j == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = j.opts.Now().UTC()
	}
	if ev.To == PhaseDeleted {
		j.WillDelete(ev.RunnerUID, ev.Reason)
	}
	if !j.write(ev) {
		return
	}
	j.log(ev)
	j.observe(ev)
	if j.kube != nil {
		j.kube.runner(rn, ev)
	}
}

// write appends the event to the file and reports whether the other sinks are to hear of it:
// not when the file holds it already, nor when they heard of it when an earlier attempt to
// write it failed.
func (j *Journal) write(ev Event) bool {
	line, err := json.Marshal(ev)
	if err != nil {
		j.opts.Log.Error(err, "encode runner event", "id", ev.ID)
		return false
	}
	written, err := j.appendEvent(ev.ID, line)
	if err != nil {
		// The file lost it; the log, the metrics and Kubernetes still hear of it.
		j.writeFailed("events", err, ev.ID)
		written = true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return written && j.seen.add(ev.ID)
}

func (j *Journal) appendEvent(id string, line []byte) (bool, error) {
	if j.opts.EventLog.Path == "" {
		return true, nil
	}
	j.files.RLock()
	if w := j.events; w != nil && !j.stopped {
		defer j.files.RUnlock()
		return w.Append(id, line)
	}
	j.files.RUnlock()
	j.files.Lock()
	defer j.files.Unlock()
	if err := j.openEventsLocked(); err != nil {
		return false, err
	}
	defer j.closeIfStoppedLocked()
	return j.events.Append(id, line)
}

// closeIfStoppedLocked closes the files after a write made once Start has returned, so that no
// file stays open after the operator stopped.
func (j *Journal) closeIfStoppedLocked() {
	if !j.stopped {
		return
	}
	if err := j.closeLocked(); err != nil {
		j.writeFailed("events", fmt.Errorf("close the record files: %w", err), "")
	}
}

func (j *Journal) writeFailed(log string, err error, id string) {
	j.opts.Log.Error(err, "write to the "+log+" log", "id", id)
	if j.opts.Metrics != nil {
		j.opts.Metrics.RecordWriteFailed(log)
	}
}

func (j *Journal) log(ev Event) {
	kv := []any{"namespace", ev.Namespace, "pool", ev.Pool, "runner", ev.Runner, "from", ev.From, "to", ev.To, "reason", ev.Reason}
	if ev.UUID != "" {
		kv = append(kv, "uuid", ev.UUID)
	}
	if ev.JobID != 0 {
		kv = append(kv, "job", ev.JobID, "handle", ev.Handle)
	}
	if ev.Repository != "" {
		kv = append(kv, "repository", ev.Repository)
	}
	if ev.Outcome != "" {
		kv = append(kv, "outcome", ev.Outcome)
	}
	for name, s := range ev.Durations {
		kv = append(kv, name+"Seconds", s)
	}
	j.opts.Log.Info("runner "+ev.To, kv...)
}

func (j *Journal) observe(ev Event) {
	m := j.opts.Metrics
	if m == nil {
		return
	}
	switch ev.To {
	case string(v1alpha1.RunnerRegistered):
		if d, ok := ev.Duration(DurationRegistration); ok {
			m.ObserveRegistration(ev.Namespace, ev.Pool, d)
		}
	case string(v1alpha1.RunnerIdle):
		if d, ok := ev.Duration(DurationStartup); ok {
			m.ObserveStartup(ev.Namespace, ev.Pool, d)
		}
	case PhaseDeleted:
		d, _ := ev.Duration(DurationLifetime)
		outcome := v1alpha1.RunnerOutcome(ev.Outcome)
		if outcome == "" {
			outcome = v1alpha1.OutcomeDeleted
		}
		m.ObserveRetired(ev.Namespace, ev.Pool, outcome, d)
	}
}

// Audit appends rec to the audit log. A failure is logged and counted, never returned: the
// operator keeps serving jobs, and the write-errors metric raises the alarm.
func (j *Journal) Audit(rec audit.Record) {
	if j == nil || j.opts.AuditLogPath == "" {
		return
	}
	if err := j.appendAudit(rec); err != nil {
		j.writeFailed("audit", err, rec.ID)
	}
}

func (j *Journal) appendAudit(rec audit.Record) error {
	j.files.RLock()
	l := j.audit
	if l != nil && !j.stopped {
		defer j.files.RUnlock()
	} else {
		j.files.RUnlock()
		j.files.Lock()
		defer j.files.Unlock()
		if err := j.openAuditLocked(); err != nil {
			return err
		}
		defer j.closeIfStoppedLocked()
		l = j.audit
	}
	if err := l.Record(rec); err != nil {
		return err
	}
	if j.opts.Metrics != nil {
		seq, _ := l.Head()
		j.opts.Metrics.SetAuditHead(seq)
	}
	return nil
}

// WillDelete tells the journal why a Runner is about to be deleted, so that whoever records
// its Deleted event first (the deleter or the Runner's finalizer) gives that reason.
func (j *Journal) WillDelete(uid types.UID, reason string) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.deletions == nil {
		j.deletions = map[types.UID]string{}
	}
	if _, ok := j.deletions[uid]; ok {
		return
	}
	j.deletions[uid] = reason
	j.deletionOrder = append(j.deletionOrder, uid)
	if len(j.deletionOrder) > 1<<14 {
		delete(j.deletions, j.deletionOrder[0])
		j.deletionOrder = j.deletionOrder[1:]
	}
}

// DeletionReason is the reason of the runner's Deleted event, if this process recorded one: the
// Runner controller finalizing a Runner the pool deleted names the pool's reason.
func (j *Journal) DeletionReason(uid types.UID) string {
	if j == nil {
		return ""
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.deletions[uid]
}

// Identity is who the audit log names as the actor.
func (j *Journal) Identity() string {
	if j == nil {
		return ""
	}
	return j.opts.Identity
}

// idSet remembers the last n ids.
type idSet struct {
	n     int
	ids   map[string]bool
	order []string
}

func newIDSet(n int) *idSet { return &idSet{n: n, ids: map[string]bool{}} }

// add reports whether id is new, remembering it.
func (s *idSet) add(id string) bool {
	if s.ids[id] {
		return false
	}
	s.ids[id] = true
	s.order = append(s.order, id)
	if len(s.order) > s.n {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
	return true
}
