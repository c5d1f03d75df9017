package jobwatch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
)

// The dispatcher: which pool serves each waiting job. It lives here, beside the pollers, and
// nowhere else: a pool's reconcile only reads its share (Demand) and claims a job before it
// creates its Runner (Claim). The rule itself is matching.Assign.

// ScopeResolver is implemented by listers that can tell the ids their scope stands for
// (*forgejo.Client); without it, a connection learns them from the jobs it lists.
type ScopeResolver interface {
	ResolveScope(ctx context.Context) (forgejo.ScopeIDs, error)
}

var _ ScopeResolver = (*forgejo.Client)(nil)

// HeldSource lists the jobs that have a Runner, by handle: the watcher's memory of who holds
// what, read once when it first dispatches (after a restart or a leader change), from the
// Runners themselves.
type HeldSource func(ctx context.Context) (map[string]types.NamespacedName, error)

// SetHeldSource sets where held jobs are read from; call it before Start.
func (w *Watcher) SetHeldSource(src HeldSource) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.heldSource = src
}

// heldBy is a pool's hold on a job; at is when a Claim made it, zero when a Runner showed it.
type heldBy struct {
	pool types.NamespacedName
	at   time.Time
}

// claimGrace is how long a claim outlives a pool's list of its Runners that lacks it: the list
// comes from a cache that may not show a Runner created a moment ago.
const claimGrace = time.Minute

// Claim records that a pool is about to create a Runner for the job; false if another pool holds
// it. Pools call it before creating, so two pools can never both make a Runner for one job.
func (w *Watcher) Claim(handle string, pool types.NamespacedName) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.loadHeldLocked()
	if h, ok := w.held[handle]; ok && h.pool != pool {
		if _, registered := w.pools[h.pool]; registered {
			return false
		}
	}
	w.held[handle] = heldBy{pool: pool, at: w.now()}
	w.changedLocked()
	return true
}

// Unclaim drops a claim whose Runner was not created after all.
func (w *Watcher) Unclaim(handle string, pool types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h, ok := w.held[handle]; ok && h.pool == pool {
		delete(w.held, handle)
		w.changedLocked()
	}
}

// Hold sets the jobs a pool holds to those its Runners have (handles), as its reconcile lists
// them; claims younger than claimGrace are kept although the list lacks them.
func (w *Watcher) Hold(pool types.NamespacedName, handles []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.loadHeldLocked()
	now := w.now()
	changed := false
	for handle, h := range w.held {
		if h.pool == pool && !slices.Contains(handles, handle) && (h.at.IsZero() || now.Sub(h.at) > claimGrace) {
			delete(w.held, handle)
			changed = true
		}
	}
	for _, handle := range handles {
		// Two pools with a Runner for one job (made before this rule, or by hand): the first
		// seen keeps it, and the other's Runner ends as its job goes.
		if _, ok := w.held[handle]; !ok && handle != "" {
			w.held[handle] = heldBy{pool: pool}
			changed = true
		}
	}
	if changed {
		w.changedLocked()
	}
}

// loadHeldLocked reads the held jobs from the Runners once.
func (w *Watcher) loadHeldLocked() {
	if w.held != nil {
		return
	}
	w.held = map[string]heldBy{}
	if w.heldSource == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, err := w.heldSource(ctx)
	if err != nil {
		// Without the list a pool could take a job another pool's Runner serves; ask again on
		// the next dispatch.
		w.log.Error(err, "read the jobs that have Runners")
		w.held = nil
		return
	}
	for handle, pool := range held {
		w.held[handle] = heldBy{pool: pool}
	}
}

// changedLocked invalidates the cached assignments.
func (w *Watcher) changedLocked() { w.version++ }

type cachedAssignment struct {
	version uint64
	pools   map[string]types.NamespacedName // by handle
	jobs    map[string]Job                  // the waiting jobs, by handle
}

// assignmentLocked is the dispatch of the waiting jobs of one Forgejo instance, recomputed only
// after something changed.
func (w *Watcher) assignmentLocked(url string) cachedAssignment {
	if a, ok := w.assignments[url]; ok && a.version == w.version {
		return a
	}
	w.loadHeldLocked()
	jobs := map[string]Job{}
	var candidates []matching.Candidate
	seenConn := map[Connection]bool{}
	for _, reg := range w.pools {
		if reg.conn.URL != url {
			continue
		}
		p := w.pollers[reg.conn]
		if p == nil {
			continue
		}
		healthy := p.err == nil && !p.polledAt.IsZero() && p.coverage.known
		candidates = append(candidates, matching.Candidate{Pool: reg.pool, Coverage: p.coverage.Coverage, Healthy: healthy})
		if !healthy || seenConn[reg.conn] {
			continue
		}
		seenConn[reg.conn] = true
		for handle, job := range p.jobs {
			if prev, ok := jobs[handle]; job.Waiting() && (!ok || job.SeenAt.Before(prev.SeenAt)) {
				jobs[handle] = job
			}
		}
	}
	refs := make([]matching.Job, 0, len(jobs))
	for handle, job := range jobs {
		refs = append(refs, matching.Job{Handle: handle, RepoID: job.RepoID, OwnerID: job.OwnerID, RunsOn: job.RunsOn})
	}
	held := make(map[string]types.NamespacedName, len(w.held))
	for handle, h := range w.held {
		held[handle] = h.pool
	}
	a := cachedAssignment{version: w.version, pools: matching.Assign(refs, candidates, held), jobs: jobs}
	if w.assignments == nil {
		w.assignments = map[string]cachedAssignment{}
	}
	w.assignments[url] = a
	return a
}

// coverage is what a poller's scope covers, once its ids are known.
type coverage struct {
	matching.Coverage
	known bool
}

// newCoverage starts a connection's coverage: a global scope needs no ids.
func newCoverage(conn Connection) coverage {
	kind, _, _ := strings.Cut(conn.Scope, " ")
	c := coverage{Coverage: matching.Coverage{Scope: v1alpha1.Scope(kind)}}
	c.known = c.Scope == v1alpha1.ScopeGlobal
	return c
}

// resolveCoverage asks Forgejo for the ids of the poller's scope, if it has not got them and the
// lister can ask.
func (w *Watcher) resolveCoverage(ctx context.Context, p *poller) error {
	w.mu.Lock()
	known := p.coverage.known
	w.mu.Unlock()
	r, ok := p.lister.(ScopeResolver)
	if known || !ok {
		return nil
	}
	ids, err := r.ResolveScope(ctx)
	if err != nil {
		return fmt.Errorf("resolve the ids of the scope: %w", err)
	}
	w.mu.Lock()
	p.coverage.OwnerID, p.coverage.RepoID, p.coverage.known = ids.OwnerID, ids.RepoID, true
	w.changedLocked()
	w.mu.Unlock()
	return nil
}

// learnCoverageLocked takes a scope's ids from a job it listed, for listers that cannot resolve
// them: every job of an organization or user scope has its owner's id, every job of a
// repository scope its repository's.
func (p *poller) learnCoverageLocked(job Job) bool {
	if p.coverage.known || job.OwnerID == 0 {
		return false
	}
	switch p.coverage.Scope {
	case v1alpha1.ScopeOrganization, v1alpha1.ScopeUser:
		p.coverage.OwnerID = job.OwnerID
	case v1alpha1.ScopeRepository:
		if job.RepoID == 0 {
			return false
		}
		p.coverage.RepoID, p.coverage.OwnerID = job.RepoID, job.OwnerID
	}
	p.coverage.known = true
	return true
}
