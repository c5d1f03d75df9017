package journal

import (
	"context"
	"encoding/json"
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

	mu      sync.Mutex
	events  *jsonlog.Writer
	audit   *audit.Log
	stopped bool
	// seen dedupes transitions when there is no event log file to do it.
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
	j.mu.Lock()
	err := j.openLocked()
	j.mu.Unlock()
	if err != nil {
		return err
	}
	if j.kube != nil {
		j.kube.run(ctx)
	} else {
		<-ctx.Done()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	// Controllers stop alongside the journal and may still finish a transition: from now on
	// each write opens and closes the files itself (see writeLocked).
	j.stopped = true
	var errs []error
	if j.events != nil {
		errs = append(errs, j.events.Close())
		j.events = nil
	}
	if j.audit != nil {
		errs = append(errs, j.audit.Close())
		j.audit = nil
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("close journal: %w", err)
		}
	}
	return nil
}

// NeedLeaderElection keeps the files with the leader.
func (j *Journal) NeedLeaderElection() bool { return true }

func (j *Journal) openLocked() error {
	if j.events == nil && j.opts.EventLog.Path != "" {
		w, err := jsonlog.Open(j.opts.EventLog)
		if err != nil {
			return fmt.Errorf("open event log: %w", err)
		}
		if cut := w.Recovered(); len(cut) > 0 {
			j.opts.Log.Info("event log ended in a partial line, cut off", "path", w.Path(), "bytes", len(cut))
		}
		j.events = w
	}
	if j.audit == nil && j.opts.AuditLogPath != "" {
		l, err := audit.Open(j.opts.AuditLogPath, j.opts.Identity, j.opts.Now)
		if err != nil {
			return fmt.Errorf("open audit log: %w", err)
		}
		j.audit = l
		if j.opts.Metrics != nil {
			seq, _ := l.Head()
			j.opts.Metrics.SetAuditHead(seq)
		}
	}
	return nil
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
		j.rememberDeletion(ev.RunnerUID, ev.Reason)
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

// write appends the event to the file, or without one remembers its id; it reports whether the
// event is new.
func (j *Journal) write(ev Event) bool {
	line, err := json.Marshal(ev)
	if err != nil {
		j.opts.Log.Error(err, "encode runner event", "id", ev.ID)
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.opts.EventLog.Path == "" {
		return j.seen.add(ev.ID)
	}
	if err := j.openLocked(); err != nil {
		j.writeFailed("events", err, ev.ID)
		return j.seen.add(ev.ID) // the other sinks still hear of it
	}
	defer j.closeIfStoppedLocked()
	written, err := j.events.Append(ev.ID, line)
	if err != nil {
		j.writeFailed("events", err, ev.ID)
		return j.seen.add(ev.ID)
	}
	return written
}

// closeIfStoppedLocked closes the files after a write made once Start has returned, so that no
// file stays open after the operator stopped.
func (j *Journal) closeIfStoppedLocked() {
	if !j.stopped {
		return
	}
	if j.events != nil {
		if err := j.events.Close(); err != nil {
			j.writeFailed("events", err, "")
		}
		j.events = nil
	}
	if j.audit != nil {
		if err := j.audit.Close(); err != nil {
			j.writeFailed("audit", err, "")
		}
		j.audit = nil
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
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.openLocked(); err != nil {
		j.writeFailed("audit", err, rec.ID)
		return
	}
	defer j.closeIfStoppedLocked()
	if err := j.audit.Record(rec); err != nil {
		j.writeFailed("audit", err, rec.ID)
		return
	}
	if j.opts.Metrics != nil {
		seq, _ := j.audit.Head()
		j.opts.Metrics.SetAuditHead(seq)
	}
}

func (j *Journal) rememberDeletion(uid types.UID, reason string) {
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
