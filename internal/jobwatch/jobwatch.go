// Package jobwatch finds the jobs waiting for runners. It keeps one poller per Forgejo
// connection (instance URL, scope and token), shared by every pool that uses it, so a hundred
// pools in one organization cost one jobs call per interval, not a hundred. Each poller lists
// `…/actions/runners/jobs`; the jobs it sees are assigned to pools with package matching, and
// the pools whose demand changed are told to reconcile.
package jobwatch

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
)

// DefaultInterval is how often each connection's jobs are listed.
const DefaultInterval = 10 * time.Second

// GoneMemory is how long a handle that left the jobs list is remembered as gone.
const GoneMemory = 10 * time.Minute

// JobLister lists a scope's waiting and running jobs; *forgejo.Client is one.
type JobLister interface {
	ListJobs(ctx context.Context, labels ...string) ([]forgejo.Job, error)
}

// Connection identifies one poller: pools with equal Connections share it.
type Connection struct {
	URL   string
	Scope string
	// TokenDigest tells tokens apart without holding them.
	TokenDigest string
}

// NewConnection builds a Connection; the token is digested, never stored.
func NewConnection(url, scope, token string) Connection {
	sum := sha256.Sum256([]byte(token))
	return Connection{URL: url, Scope: scope, TokenDigest: hex.EncodeToString(sum[:8])}
}

// Job is a job as a pool sees it.
type Job struct {
	ID      int64
	Attempt int64
	Handle  string
	RunsOn  []string
	Status  string
	TaskID  int64
	// SeenAt is when a poll first saw the job waiting.
	SeenAt time.Time
	// RunningSince is when the job was first seen running; zero before.
	RunningSince time.Time
	// RepoID is the job's repository; Repository its "owner/name", known from webhooks only;
	// OwnerID the repository's owner.
	RepoID     int64
	Repository string
	OwnerID    int64
	// Via says how the operator first learned of the job: "poll" or "webhook delivery ID".
	Via string
}

// ViaPoll marks a job first seen by a poll.
const ViaPoll = "poll"

// Timings receives how long jobs waited for a runner and how long they ran, as far as the
// watcher saw (to within a poll interval, or exactly with webhooks).
type Timings interface {
	ObserveQueueWait(time.Duration)
	ObserveExecution(time.Duration)
}

// Waiting reports whether the job still needs a runner.
func (j Job) Waiting() bool { return j.Status == "waiting" }

// Demand is what a pool learns from the watcher.
type Demand struct {
	// Assigned are the waiting jobs with a handle that this pool is to serve.
	Assigned []Job
	// Known are every job the pool's connection saw in its last poll, by handle, waiting or
	// running: a runner whose handle is missing here has lost its job.
	Known map[string]Job
	// Gone are the handles that left the list (finished, cancelled or abandoned jobs), with the
	// time of the first poll that no longer showed them; kept for GoneMemory.
	Gone map[string]time.Time
	// PolledAt is when the pool's connection was last listed successfully; zero until then.
	PolledAt time.Time
	// Err is the last poll's error, if it failed.
	Err error
}

// Watcher runs the pollers. Register pools with Register; it calls notify for every pool
// whose demand may have changed.
type Watcher struct {
	interval time.Duration
	notify   func(types.NamespacedName)
	log      logr.Logger
	now      func() time.Time

	mu      sync.Mutex
	ctx     context.Context // set by Start
	timings Timings
	// timed remembers which jobs' figures were observed, so a job seen through several
	// connections (or by a poll and a webhook) counts once.
	timed   map[string]timedJob
	pools   map[types.NamespacedName]registration
	pollers map[Connection]*poller
	trigger TriggerOptions

	// The dispatcher's state (dispatch.go): who holds which job, and the assignments computed
	// from the pollers' last lists, valid while version is unchanged.
	// notified is each pool's share of the waiting jobs when it was last told to look.
	notified    map[types.NamespacedName]string
	heldSource  HeldSource
	held        map[string]heldBy
	version     uint64
	assignments map[string]cachedAssignment
}

type timedJob struct {
	waitObserved, execObserved bool
	at                         time.Time
}

type registration struct {
	conn Connection
	pool matching.Pool
}

type poller struct {
	lister JobLister
	cancel context.CancelFunc
	// wake tells the poller's loop that wanted changed.
	wake chan struct{}
	// wanted are the polls asked for, earliest first; lastStart is when the last poll began.
	wanted    []wantedPoll
	lastStart time.Time
	// coverage is what the connection's scope covers, in the ids jobs carry.
	coverage coverage
	// Last poll's result.
	jobs    map[string]Job       // by handle; jobs without a handle are left out
	gone    map[string]time.Time // handles that left the list, and when
	done    map[string]time.Time // handles a pool saw run to the end, and when
	results map[string]string    // final job statuses webhooks reported, by handle
	// repoNames are repositories' names by id, as verified webhooks that asked this
	// connection to poll named them: kept per connection, so that a name a pool owner's secret
	// vouches for labels only the jobs of that owner's connections.
	repoNames map[int64]string
	polledAt  time.Time
	err       error
}

// New returns a Watcher listing every connection each interval.
func New(interval time.Duration, notify func(types.NamespacedName), log logr.Logger) *Watcher {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Watcher{
		interval: interval,
		notify:   notify,
		log:      log,
		now:      time.Now,
		pools:    map[types.NamespacedName]registration{},
		pollers:  map[Connection]*poller{},
		trigger: TriggerOptions{
			Window: DefaultCoalesceWindow, FollowUps: DefaultFollowUps, RunnerEndFollowUps: DefaultRunnerEndFollowUps,
		},
	}
}

// SetTimings sets where job timings go; call it before Start.
func (w *Watcher) SetTimings(t Timings) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timings = t
}

// startedRunningLocked records that a job went from waiting to running.
func (w *Watcher) startedRunningLocked(job *Job, waitingSince, now time.Time) {
	job.RunningSince = now
	t := w.timedLocked(job.Handle, now)
	if !t.waitObserved && w.timings != nil && !waitingSince.IsZero() {
		w.timings.ObserveQueueWait(now.Sub(waitingSince))
	}
	t.waitObserved = true
	w.timed[job.Handle] = t
}

// stoppedRunningLocked records that a running job left the list or completed.
func (w *Watcher) stoppedRunningLocked(job Job, now time.Time) {
	if job.RunningSince.IsZero() {
		return
	}
	t := w.timedLocked(job.Handle, now)
	if !t.execObserved && w.timings != nil {
		w.timings.ObserveExecution(now.Sub(job.RunningSince))
	}
	t.execObserved = true
	w.timed[job.Handle] = t
}

func (w *Watcher) timedLocked(handle string, now time.Time) timedJob {
	if w.timed == nil {
		w.timed = map[string]timedJob{}
	}
	t, ok := w.timed[handle]
	if !ok {
		t.at = now
	}
	for h, old := range w.timed {
		if now.Sub(old.at) > GoneMemory {
			delete(w.timed, h)
		}
	}
	return t
}

// Start runs the pollers until ctx ends (manager.Runnable).
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	for conn, p := range w.pollers {
		w.startPoller(conn, p)
	}
	w.mu.Unlock()
	<-ctx.Done()
	return nil
}

// NeedLeaderElection is true: only the leader creates runners, so only it polls.
func (w *Watcher) NeedLeaderElection() bool { return true }

// Register records (or updates) a pool and the connection it polls through. A new
// connection is polled at once.
func (w *Watcher) Register(pool matching.Pool, conn Connection, lister JobLister) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old, had := w.pools[pool.Key]
	w.pools[pool.Key] = registration{conn: conn, pool: pool}
	if !had || old.conn != conn || !slices.Equal(old.pool.LabelNames, pool.LabelNames) || old.pool.Scope != pool.Scope {
		w.changedLocked()
	}
	if had && old.conn != conn {
		w.dropPollerIfUnused(old.conn)
	}
	if _, ok := w.pollers[conn]; !ok {
		p := &poller{lister: lister, wake: make(chan struct{}, 1), coverage: newCoverage(conn)}
		w.pollers[conn] = p
		if w.ctx != nil {
			w.startPoller(conn, p)
		}
	}
}

// Unregister forgets a pool; a connection no pool uses stops being polled.
func (w *Watcher) Unregister(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg, ok := w.pools[key]
	if !ok {
		return
	}
	delete(w.pools, key)
	delete(w.notified, key)
	for handle, h := range w.held {
		if h.pool == key {
			delete(w.held, handle)
		}
	}
	w.changedLocked()
	w.dropPollerIfUnused(reg.conn)
}

// Demand returns what the last polls say about a pool: its share of the waiting jobs, as the
// dispatcher (dispatch.go, matching.Assign) decided it for the pool's Forgejo instance, and the
// jobs its own connection lists.
func (w *Watcher) Demand(key types.NamespacedName) Demand {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg, ok := w.pools[key]
	if !ok {
		return Demand{}
	}
	p := w.pollers[reg.conn]
	if p == nil {
		return Demand{}
	}
	d := Demand{Known: make(map[string]Job, len(p.jobs)), Gone: make(map[string]time.Time, len(p.gone)), PolledAt: p.polledAt, Err: p.err}
	for handle, at := range p.gone {
		d.Gone[handle] = at
	}
	for handle, job := range p.jobs {
		d.Known[handle] = job
	}
	a := w.assignmentLocked(reg.conn.URL)
	for handle, pool := range a.pools {
		if pool == key {
			d.Assigned = append(d.Assigned, a.jobs[handle])
		}
	}
	slices.SortFunc(d.Assigned, func(a, b Job) int { return int(a.ID - b.ID) })
	return d
}

// Job returns what the last polls and webhooks say of one job of a pool's connection.
func (w *Watcher) Job(pool types.NamespacedName, handle string) (Job, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg, ok := w.pools[pool]
	if !ok {
		return Job{}, false
	}
	p := w.pollers[reg.conn]
	if p == nil {
		return Job{}, false
	}
	job, ok := p.jobs[handle]
	return job, ok
}

// Finished records that a runner of the pool ran the job with this handle to its end, so that
// the job stops counting as demand at once, although the last poll (or one on its way) still
// lists it as waiting.
func (w *Watcher) Finished(pool types.NamespacedName, handle string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg, ok := w.pools[pool]
	if !ok {
		return
	}
	now := w.now()
	for conn, p := range w.pollers {
		if conn.URL != reg.conn.URL {
			continue
		}
		if p.done == nil {
			p.done = map[string]time.Time{}
		}
		p.done[handle] = now
		if job, known := p.jobs[handle]; known {
			w.changedLocked()
			delete(p.jobs, handle)
			if p.gone == nil {
				p.gone = map[string]time.Time{}
			}
			p.gone[handle] = now
			w.stoppedRunningLocked(job, now)
		}
	}
}

// Result returns the final status a webhook reported for a pool's job, if one did.
func (w *Watcher) Result(pool types.NamespacedName, handle string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg, ok := w.pools[pool]
	if !ok {
		return "", false
	}
	for conn, p := range w.pollers {
		if conn.URL == reg.conn.URL {
			if result, ok := p.results[handle]; ok {
				return result, true
			}
		}
	}
	return "", false
}

func (w *Watcher) dropPollerIfUnused(conn Connection) {
	for _, reg := range w.pools {
		if reg.conn == conn {
			return
		}
	}
	if p := w.pollers[conn]; p != nil {
		if p.cancel != nil {
			p.cancel()
		}
		delete(w.pollers, conn)
	}
}

func (w *Watcher) startPoller(conn Connection, p *poller) {
	ctx, cancel := context.WithCancel(w.ctx)
	p.cancel = cancel
	go w.run(ctx, conn, p)
}

func (w *Watcher) run(ctx context.Context, conn Connection, p *poller) {
	log := w.log.WithValues("forgejo", conn.URL, "scope", conn.Scope)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		w.pollOnce(ctx, conn, p, log)
		for waiting := true; waiting; {
			w.mu.Lock()
			next := p.nextPollLocked(w.interval, w.trigger.Window)
			w.mu.Unlock()
			timer.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				waiting = false
			case <-p.wake: // something new is wanted: work out the next poll again
				// Since Go 1.23 a stopped or reset timer delivers no stale tick: no draining.
				timer.Stop()
			}
		}
	}
}

func (w *Watcher) pollOnce(ctx context.Context, conn Connection, p *poller, log logr.Logger) {
	w.mu.Lock()
	started := w.now()
	via := cmp.Or(p.takeDueLocked(started), ViaPoll)
	w.mu.Unlock()
	err := w.resolveCoverage(ctx, p)
	var jobs []forgejo.Job
	if err == nil {
		jobs, err = p.lister.ListJobs(ctx)
	}
	if ctx.Err() != nil {
		return
	}
	now := w.now()

	w.mu.Lock()
	if err != nil {
		changed := p.err == nil
		p.err = err
		w.changedLocked()
		w.mu.Unlock()
		log.Error(err, "list jobs")
		if changed {
			w.notifyUsers(conn)
		}
		return
	}
	next := make(map[string]Job, len(jobs))
	learnt := false
	for _, j := range jobs {
		if j.Handle == "" {
			// Created before the upgrade to Forgejo 15: no runner can be bound to it.
			continue
		}
		if doneAt, ok := p.done[j.Handle]; ok && doneAt.After(started) {
			// This list left Forgejo before the job's runner finished it.
			continue
		}
		job := Job{ID: j.ID, Attempt: j.Attempt, Handle: j.Handle, RunsOn: j.RunsOn, Status: j.Status, TaskID: j.TaskID, SeenAt: now,
			RepoID: j.RepoID, Repository: p.repoNames[j.RepoID], OwnerID: j.OwnerID, Via: via}
		if p.learnCoverageLocked(job) {
			learnt = true
		}
		prev, known := p.jobs[j.Handle]
		if known {
			job.SeenAt, job.RunningSince, job.Via = prev.SeenAt, prev.RunningSince, prev.Via
			job.Repository = cmp.Or(prev.Repository, job.Repository)
		}
		if job.Status == "running" && job.RunningSince.IsZero() {
			waitingSince := time.Time{}
			if known {
				waitingSince = prev.SeenAt
			}
			w.startedRunningLocked(&job, waitingSince, now)
		}
		next[j.Handle] = job
	}
	// A job a webhook reported while this list was on its way is newer than the list.
	for handle, job := range p.jobs {
		if _, listed := next[handle]; !listed && job.SeenAt.After(started) {
			next[handle] = job
		}
	}
	changed := learnt || p.err != nil || p.polledAt.IsZero() || !sameJobs(p.jobs, next)
	if changed {
		w.changedLocked()
	}
	if p.gone == nil {
		p.gone = map[string]time.Time{}
	}
	for handle, job := range p.jobs {
		if _, still := next[handle]; !still {
			p.gone[handle] = now
			w.stoppedRunningLocked(job, now)
		}
	}
	for handle, at := range p.gone {
		if _, back := next[handle]; back || now.Sub(at) > GoneMemory {
			delete(p.gone, handle)
		}
	}
	for handle, at := range p.done {
		if now.Sub(at) > GoneMemory {
			delete(p.done, handle)
		}
	}
	for handle := range p.results {
		if _, gone := p.gone[handle]; !gone {
			if _, listed := next[handle]; !listed {
				delete(p.results, handle) // forgotten with its gone entry
			}
		}
	}
	p.jobs, p.polledAt, p.err = next, now, nil
	w.mu.Unlock()
	if changed {
		w.notifyUsers(conn)
	}
}

// notifyUsers tells every pool on the connection's instance to reconcile: a change in one
// connection's jobs can move a job between pools of different connections.
func (w *Watcher) notifyUsers(conn Connection) {
	w.mu.Lock()
	shares := w.sharesLocked(conn.URL)
	if w.notified == nil {
		w.notified = map[types.NamespacedName]string{}
	}
	var keys []types.NamespacedName
	for key, reg := range w.pools {
		if reg.conn.URL != conn.URL {
			continue
		}
		// The pools of the connection that changed see a new list (jobs gone, jobs running); the
		// others only care when their share of the waiting jobs moved.
		if share := shares[key]; reg.conn == conn || w.notified[key] != share {
			keys = append(keys, key)
			w.notified[key] = share
		}
	}
	w.mu.Unlock()
	for _, k := range keys {
		w.notify(k)
	}
}

// sharesLocked describes each pool's share of the waiting jobs of a Forgejo instance: its
// assigned handles, sorted and joined.
func (w *Watcher) sharesLocked(url string) map[types.NamespacedName]string {
	byPool := map[types.NamespacedName][]string{}
	for handle, pool := range w.assignmentLocked(url).pools {
		byPool[pool] = append(byPool[pool], handle)
	}
	out := make(map[types.NamespacedName]string, len(byPool))
	for pool, handles := range byPool {
		slices.Sort(handles)
		out[pool] = strings.Join(handles, ",")
	}
	return out
}

func sameJobs(a, b map[string]Job) bool {
	if len(a) != len(b) {
		return false
	}
	for h, ja := range a {
		jb, ok := b[h]
		if !ok || ja.Status != jb.Status || ja.TaskID != jb.TaskID {
			return false
		}
	}
	return true
}

// Covers reports whether the connection's scope sees jobs of the repository ("owner/name").
// A user scope's owner is the token's user, which the connection does not know: it covers
// nothing here, and its pools learn of jobs by polling.
func (c Connection) Covers(repository string) bool {
	kind, name, _ := strings.Cut(c.Scope, " ")
	owner, _, _ := strings.Cut(repository, "/")
	switch kind {
	case "global":
		return true
	case "organization":
		return strings.EqualFold(name, owner)
	case "repository":
		return strings.EqualFold(name, repository)
	}
	return false
}

// Offer records what a webhook said about a job in every connection on that Forgejo instance
// whose scope covers the repository, as a poll would have seen it, and tells the pools there
// when that changed anything. It returns whether it did. Events may come late, twice or out
// of order: a waiting event for a job already known or already gone changes nothing, and the
// next poll corrects whatever a webhook got wrong.
func (w *Watcher) Offer(url, repository string, job Job) bool {
	if job.Handle == "" {
		return false
	}
	url = strings.TrimSuffix(url, "/")
	now := w.now()
	changed := map[Connection]bool{}
	w.mu.Lock()
	for conn, p := range w.pollers {
		if conn.URL != url || !conn.Covers(repository) {
			continue
		}
		p.rememberRepository(job.RepoID, repository)
		if p.jobs == nil {
			p.jobs = map[string]Job{}
		}
		if p.gone == nil {
			p.gone = map[string]time.Time{}
		}
		if w.offerLocked(p, job, now) {
			changed[conn] = true
			w.changedLocked()
		}
	}
	w.mu.Unlock()
	for conn := range changed {
		w.notifyUsers(conn)
	}
	return len(changed) > 0
}

func (w *Watcher) offerLocked(p *poller, job Job, now time.Time) bool {
	handle := job.Handle
	known, isKnown := p.jobs[handle]
	_, isGone := p.gone[handle]
	switch job.Status {
	case "waiting":
		if isKnown || isGone {
			return false
		}
		job.SeenAt = now
		p.jobs[handle] = job
		return true
	case "running":
		if isGone || (isKnown && known.Status == "running") {
			return false
		}
		job.SeenAt = now
		waitingSince := time.Time{}
		if isKnown {
			job.SeenAt, waitingSince, job.Via = known.SeenAt, known.SeenAt, known.Via
		}
		w.startedRunningLocked(&job, waitingSince, now)
		p.jobs[handle] = job
		return true
	case "success", "failure", "cancelled", "skipped":
		if p.results == nil {
			p.results = map[string]string{}
		}
		p.results[handle] = job.Status
		if isGone {
			return false
		}
		if isKnown {
			w.stoppedRunningLocked(known, now)
		}
		delete(p.jobs, handle)
		p.gone[handle] = now
		return true
	}
	return false
}
