package runnerpool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// Defaults of the cleanup steps.
const (
	// DefaultJobGoneGrace is how long a runner may outlive its job's leaving the jobs list
	// before the pool ends it: long enough for a runner that ran the job to exit by itself.
	DefaultJobGoneGrace = 15 * time.Second
	// DefaultGCInterval is how often a pool's registrations are compared with its Runners.
	DefaultGCInterval = 5 * time.Minute
	// retryBase and retryCap bound the wait before a job whose runner failed gets another.
	retryBase = 5 * time.Second
	retryCap  = 5 * time.Minute
)

// endRunnersWithoutJob ends the runners whose job left the jobs list (cancelled, or taken and
// finished by another runner) and that did not end by themselves within the grace period: a
// runner started with --wait would otherwise wait for that job for ever. It returns the runners
// still alive, and when the next grace period of a runner whose job is gone ends (0 for none), so
// that the runner is ended then, not at the next resync.
func (r *Reconciler) endRunnersWithoutJob(ctx context.Context, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus, live []v1alpha1.Runner, demand jobwatch.Demand) ([]v1alpha1.Runner, time.Duration, error) {
	if demand.PolledAt.IsZero() || demand.Err != nil {
		return live, 0, nil //nolint:nilerr // without a good poll, no job can be said to be gone
	}
	now := r.Now()
	var kept, ending []v1alpha1.Runner
	var next time.Duration
	for _, rn := range live {
		if jobGone(&rn, demand, now, r.jobGoneGrace()) && !r.podEnded(ctx, &rn) {
			ending = append(ending, rn)
			continue
		}
		if left := graceLeft(&rn, demand, now, r.jobGoneGrace()); left > 0 && (next == 0 || left < next) {
			next = left
		}
		kept = append(kept, rn)
	}
	if len(ending) == 0 {
		return live, next, nil
	}
	for _, rn := range ending {
		rec := Record(&rn)
		rec.Outcome, rec.Reason = v1alpha1.OutcomeDeleted, "JobGone"
		rec.Message = jobGoneMessage(&rn)
		finished := metav1.NewTime(now)
		rec.FinishedAt = &finished
		status.RecentRunners = AddRecord(status.RecentRunners, rec, historyLimit(pool))
	}
	if err := r.updateStatus(ctx, pool, status); err != nil {
		return nil, 0, err
	}
	for i := range ending {
		// The Runner's finalizer deletes its registration; its pod and Secret go with it.
		if err := r.deleteRunner(ctx, &ending[i], "JobGone", jobGoneMessage(&ending[i])); err != nil {
			return nil, 0, fmt.Errorf("end runner %s: %w", ending[i].Name, err)
		}
		logf.FromContext(ctx).Info("ended runner whose job is gone", "runner", ending[i].Name, "job", ending[i].Spec.Job.ID)
	}
	return kept, next, nil
}

// graceLeft is how long a runner whose job left the list may still end by itself; 0 when its
// job is listed, or the grace is over.
func graceLeft(rn *v1alpha1.Runner, demand jobwatch.Demand, now time.Time, grace time.Duration) time.Duration {
	if rn.Spec.Job == nil {
		return 0
	}
	if _, listed := demand.Known[rn.Spec.Job.Handle]; listed {
		return 0
	}
	if goneAt, ok := demand.Gone[rn.Spec.Job.Handle]; ok {
		return max(0, goneAt.Add(grace).Sub(now))
	}
	return max(0, rn.CreationTimestamp.Add(grace).Sub(demand.PolledAt))
}

func jobGoneMessage(rn *v1alpha1.Runner) string {
	return fmt.Sprintf("job %d left the jobs list before this runner ran it (cancelled, or run by another runner)", rn.Spec.Job.ID)
}

func jobGone(rn *v1alpha1.Runner, demand jobwatch.Demand, now time.Time, grace time.Duration) bool {
	if rn.Spec.Job == nil || rn.Status.Phase == v1alpha1.RunnerFinished || rn.Status.Phase == v1alpha1.RunnerFailed {
		return false
	}
	handle := rn.Spec.Job.Handle
	if _, listed := demand.Known[handle]; listed {
		return false
	}
	if goneAt, ok := demand.Gone[handle]; ok {
		return now.Sub(goneAt) >= grace
	}
	// Never listed since the operator started, though polled well after the runner was made.
	return demand.PolledAt.Sub(rn.CreationTimestamp.Time) >= grace
}

func (r *Reconciler) jobGoneGrace() time.Duration {
	if r.JobGoneGrace > 0 {
		return r.JobGoneGrace
	}
	return DefaultJobGoneGrace
}

// warmRetryDelay is the wait before another warm runner (one for no job in particular) after
// the last ones failed or could not be brought up, by the same rule as retryDelay: without it, a
// pod the namespace refuses would be registered, refused and made again as fast as the pool
// reconciles. The run of failures counts back from the newest warm runner in the history.
func warmRetryDelay(history []v1alpha1.RunnerRecord, now time.Time) time.Duration {
	failures := 0
	var last time.Time
	for _, rec := range history {
		if rec.Handle != "" {
			continue
		}
		if rec.Outcome != v1alpha1.OutcomeFailed && rec.Outcome != v1alpha1.OutcomeError {
			break
		}
		failures++
		if rec.FinishedAt != nil && rec.FinishedAt.After(last) {
			last = rec.FinishedAt.Time
		}
	}
	return backoff(failures, last, now)
}

func backoff(failures int, last, now time.Time) time.Duration {
	if failures == 0 {
		return 0
	}
	delay := retryBase << min(failures-1, 10)
	delay = min(delay, retryCap)
	return max(0, last.Add(delay).Sub(now))
}

// orphanCollector deletes registrations that carry a pool's marker but belong to no Runner: the
// trace of a crash between registering a runner and recording it. A registration must look
// orphaned in two passes, an interval apart, before it is deleted, so one whose Runner is
// recording it right now is never taken. Registrations without the pool's marker are never
// touched.
type orphanCollector struct {
	mu       sync.Mutex
	lastRun  map[types.UID]time.Time
	suspects map[types.UID][]int64
	// listings are the connections' last complete lists of registrations: pools sharing a
	// connection (URL, scope, token) see the same registrations, so one list serves them all.
	listings map[jobwatch.Connection]listing
}

type listing struct {
	at            time.Time
	registrations []forgejo.Runner
}

// list returns the connection's registrations, listed anew only when the last list is older
// than maxAge.
func (g *orphanCollector) list(ctx context.Context, fj *forgejo.Client, conn jobwatch.Connection, now time.Time, maxAge time.Duration) ([]forgejo.Runner, time.Time, error) {
	g.mu.Lock()
	if l, ok := g.listings[conn]; ok && now.Sub(l.at) < maxAge {
		g.mu.Unlock()
		return l.registrations, l.at, nil
	}
	g.mu.Unlock()
	registrations, err := fj.ListRunners(ctx, forgejo.ListOptions{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list registrations for garbage collection: %w", err)
	}
	g.mu.Lock()
	if g.listings == nil {
		g.listings = map[jobwatch.Connection]listing{}
	}
	for c, l := range g.listings {
		if now.Sub(l.at) >= maxAge {
			delete(g.listings, c)
		}
	}
	g.listings[conn] = listing{at: now, registrations: registrations}
	g.mu.Unlock()
	return registrations, now, nil
}

func (g *orphanCollector) due(pool types.UID, now time.Time, interval time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lastRun == nil {
		g.lastRun, g.suspects = map[types.UID]time.Time{}, map[types.UID][]int64{}
	}
	if last, ok := g.lastRun[pool]; ok && now.Sub(last) < interval {
		return false
	}
	g.lastRun[pool] = now
	return true
}

// collect runs one pass for a pool. known are the registration IDs its Runners hold.
// deleted is told of every registration the pass deleted (or found already gone). It decides
// on a complete listing only (forgejo.Client.ListRunners fails rather than return a partial
// one), and confirms each registration by id, with its uuid and marker, before deleting it.
// It returns the ids the listing holds, and when it was made. The listing is the connection's, shared with the other
// pools on it for half an interval: a registration made after it is not in it, and one deleted
// since is confirmed gone by id before anything is done.
func (g *orphanCollector) collect(ctx context.Context, fj *forgejo.Client, conn jobwatch.Connection, interval time.Duration, pool *v1alpha1.RunnerPool, known map[int64]bool,
	deleted func(pool *v1alpha1.RunnerPool, reg forgejo.Runner, result string)) (map[int64]bool, time.Time, error) {
	registrations, at, err := g.list(ctx, fj, conn, time.Now(), interval/2)
	if err != nil {
		return nil, at, err
	}
	listed := make(map[int64]bool, len(registrations))
	for _, reg := range registrations {
		listed[reg.ID] = true
	}
	ours := markedAs(pool)
	g.mu.Lock()
	previous := g.suspects[pool.UID]
	g.mu.Unlock()
	var suspects []int64
	for _, reg := range registrations {
		if !ours(reg) || known[reg.ID] {
			continue
		}
		if !slices.Contains(previous, reg.ID) {
			suspects = append(suspects, reg.ID)
			continue
		}
		if err := deleteOrphan(ctx, fj, pool, reg, deleted); err != nil {
			return nil, at, err
		}
	}
	g.mu.Lock()
	if g.suspects == nil {
		g.suspects = map[types.UID][]int64{}
	}
	g.suspects[pool.UID] = suspects
	g.mu.Unlock()
	return listed, at, nil
}

// markedAs tells the registrations that carry the pool's marker.
func markedAs(pool *v1alpha1.RunnerPool) func(reg forgejo.Runner) bool {
	marker := "pool-uid=" + string(pool.UID) + ";"
	return func(reg forgejo.Runner) bool {
		return strings.HasPrefix(reg.Description, runner.DescriptionPrefix) && strings.Contains(reg.Description, marker)
	}
}

// deleteOrphan deletes a listed registration once Forgejo shows it again, by id, with the same
// uuid and the pool's marker.
func deleteOrphan(ctx context.Context, fj *forgejo.Client, pool *v1alpha1.RunnerPool, reg forgejo.Runner,
	deleted func(pool *v1alpha1.RunnerPool, reg forgejo.Runner, result string)) error {
	// Asked again by id: the listing is seconds old, and an id is what DELETE takes.
	got, err := fj.GetRunner(ctx, reg.ID)
	switch {
	case errors.Is(err, forgejo.ErrNotFound):
		deleted(pool, reg, "already gone (Forgejo answered 404)")
		return nil
	case err != nil:
		return fmt.Errorf("confirm orphaned registration %s: %w", reg.UUID, err)
	case got.UUID != reg.UUID || !markedAs(pool)(got):
		return nil // not the registration listed: leave it
	}
	result := "deleted"
	if err := fj.DeleteRunner(ctx, reg.ID); errors.Is(err, forgejo.ErrNotFound) {
		result = "already gone (Forgejo answered 404)"
	} else if err != nil {
		return fmt.Errorf("delete orphaned registration %s: %w", reg.UUID, err)
	}
	logf.FromContext(ctx).Info("deleted orphaned registration", "uuid", reg.UUID, "name", reg.Name)
	deleted(pool, reg, result)
	return nil
}

// collectLast is a deleted pool's last pass, once its Runners are gone: every registration
// with the pool's marker is deleted at once, without waiting for a second pass, since no Runner
// of the pool is left to be recording one (a pool being deleted makes none). These are the
// registrations of Runners let go at their deregistration deadline, and those of a crash. It
// returns how many it deleted or found gone.
func (g *orphanCollector) collectLast(ctx context.Context, fj *forgejo.Client, pool *v1alpha1.RunnerPool,
	deleted func(pool *v1alpha1.RunnerPool, reg forgejo.Runner, result string)) (int, error) {
	registrations, err := fj.ListRunners(ctx, forgejo.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list registrations for the last garbage collection: %w", err)
	}
	ours := markedAs(pool)
	n := 0
	var errs []error
	for _, reg := range registrations {
		if !ours(reg) {
			continue
		}
		if err := deleteOrphan(ctx, fj, pool, reg, deleted); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (g *orphanCollector) forget(pool types.UID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.lastRun, pool)
	delete(g.suspects, pool)
}

// podEnded reports whether the runner's pod has ended: then the runner ran (or missed) its job
// by itself, and the Runner controller records how, which beats guessing here.
func (r *Reconciler) podEnded(ctx context.Context, rn *v1alpha1.Runner) bool {
	var pod corev1.Pod
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rn.Namespace, Name: runnerpod.PodName(rn)}, &pod); err != nil {
		return false
	}
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// scaleDown removes warm runners (no job) beyond minIdle that have been up longer than
// scaleDownDelay, so a pool with no demand comes down to minIdle. Only runners waiting for a
// job are taken, and only when Forgejo's word is safe to act on: the runner read idle on two
// looks idleConfirmDelay apart, and no job the pool could run started running lately without
// a runner of the pool bound to it (or waits to be taken), since a runner that has just
// fetched a task still reads idle. One still starting is left to start.
func (r *Reconciler) scaleDown(ctx context.Context, fj *forgejo.Client, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus, live []v1alpha1.Runner, demand jobwatch.Demand) ([]v1alpha1.Runner, error) {
	delay := 5 * time.Minute
	if d := pool.Spec.Scaling.ScaleDownDelay; d != nil {
		delay = d.Duration
	}
	now := r.Now()
	warm := 0
	for _, rn := range live {
		if rn.Spec.Job == nil {
			warm++
		}
	}
	surplus := warm - int(pool.Spec.Scaling.MinIdle)
	if surplus <= 0 || demand.PolledAt.IsZero() || demand.Err != nil || MayHaveTakenAJob(pool, live, demand, now) {
		return live, nil //nolint:nilerr // without a good poll nothing is safe to remove; the poll's error is reported elsewhere
	}
	var kept, removing []v1alpha1.Runner
	for _, rn := range live {
		idleLongEnough := rn.Spec.Job == nil && rn.Status.Phase == v1alpha1.RunnerIdle && rn.Status.Stop == nil &&
			rn.Status.StartedAt != nil && now.Sub(rn.Status.StartedAt.Time) >= delay
		if surplus > 0 && idleLongEnough && r.idle.confirmed(rn.UID, idleNow(ctx, fj, &rn), now) {
			removing = append(removing, rn)
			surplus--
			continue
		}
		kept = append(kept, rn)
	}
	if len(removing) == 0 {
		return live, nil
	}
	for _, rn := range removing {
		rec := Record(&rn)
		rec.Outcome, rec.Reason, rec.Message = v1alpha1.OutcomeDeleted, "ScaledDown", scaledDownMessage
		finished := metav1.NewTime(now)
		rec.FinishedAt = &finished
		status.RecentRunners = AddRecord(status.RecentRunners, rec, historyLimit(pool))
	}
	if err := r.updateStatus(ctx, pool, status); err != nil {
		return nil, err
	}
	for i := range removing {
		r.idle.first.Delete(removing[i].UID)
		if err := r.deleteRunner(ctx, &removing[i], "ScaledDown", scaledDownMessage); err != nil {
			return nil, fmt.Errorf("scale down runner %s: %w", removing[i].Name, err)
		}
		logf.FromContext(ctx).Info("scaled down warm runner", "runner", removing[i].Name)
	}
	return kept, nil
}

const scaledDownMessage = "a warm runner above minIdle, idle longer than scaleDownDelay"

// idleNow reports whether Forgejo shows the warm runner idle now; not knowing is no licence
// to delete it.
func idleNow(ctx context.Context, fj *forgejo.Client, rn *v1alpha1.Runner) bool {
	if rn.Status.Registration == nil {
		return false
	}
	got, err := fj.GetRunner(ctx, rn.Status.Registration.ID)
	return err == nil && got.UUID == rn.Status.Registration.UUID && got.Status == forgejo.RunnerIdle
}
