package runnerpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
)

// Timings of the checks that decide on Forgejo's word.
const (
	// lostConfirmDelay is how long a runner whose registration is missing from a complete
	// listing must stay missing (asked again by id) before the pool stops it: a runner that has
	// just run its job, whose registration Forgejo deleted, ends by itself within it.
	lostConfirmDelay = 10 * time.Second
	// idleConfirmDelay is how far apart two looks must both find a warm runner idle before it
	// is scaled down. Forgejo reports a runner active only after a task report (UpdateTask or
	// UpdateLog) in the last 10 s, so one that has just fetched a task still reads idle; the
	// runner reports within a second or two of starting the task.
	idleConfirmDelay = 5 * time.Second
	// takeoverWindow: a job that started running this recently, bound to none of the pool's
	// runners, may have been taken by one of its warm runners that has not reported yet.
	takeoverWindow = 15 * time.Second
)

// LostCandidates are the live runners whose registration a complete listing of the scope does
// not hold, though they should be waiting for a task: Forgejo deleted the registration (an
// admin, its cleanup), and forgejo-runner retries Unauthenticated for ever.
func LostCandidates(live []v1alpha1.Runner, listed map[int64]bool) []v1alpha1.Runner {
	var out []v1alpha1.Runner
	for _, rn := range live {
		if rn.Status.Registration == nil || rn.Status.Stop != nil || rn.Status.Phase != v1alpha1.RunnerIdle || !rn.DeletionTimestamp.IsZero() {
			continue
		}
		if !listed[rn.Status.Registration.ID] {
			out = append(out, rn)
		}
	}
	return out
}

// lostTracker remembers runners found missing from a listing until they are confirmed lost.
type lostTracker struct {
	mu    sync.Mutex
	since map[types.UID]time.Time
}

func (l *lostTracker) suspect(uid types.UID, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.since == nil {
		l.since = map[types.UID]time.Time{}
	}
	if _, ok := l.since[uid]; !ok {
		l.since[uid] = now
	}
}

func (l *lostTracker) clear(uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.since, uid)
}

// due returns the suspects among live that have waited out the delay, and how long until the
// next one has (zero when none waits).
func (l *lostTracker) due(live []v1alpha1.Runner, now time.Time) (due []v1alpha1.Runner, next time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, rn := range live {
		at, ok := l.since[rn.UID]
		if !ok {
			continue
		}
		if wait := at.Add(lostConfirmDelay).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		due = append(due, rn)
	}
	return due, next
}

// stopLostRunners asks Forgejo again, by id, for each runner whose registration a listing
// missed a while ago, and stops those it confirms gone (a 404 in a scope the token can see;
// an error decides nothing). It returns when to look again.
func (r *Reconciler) stopLostRunners(ctx context.Context, fj *forgejo.Client, live []v1alpha1.Runner) (time.Duration, error) {
	due, next := r.lost.due(live, r.Now())
	for i := range due {
		rn := &due[i]
		if rn.Status.Registration == nil || rn.Status.Stop != nil || rn.Status.Phase != v1alpha1.RunnerIdle {
			r.lost.clear(rn.UID)
			continue
		}
		got, err := fj.GetRunner(ctx, rn.Status.Registration.ID)
		if err == nil && got.UUID == rn.Status.Registration.UUID {
			r.lost.clear(rn.UID) // only missed by a listing
			continue
		}
		if err != nil {
			if err = fj.ClassifyNotFound(ctx, err); !errors.Is(err, forgejo.ErrGone) {
				next = lostConfirmDelay // not confirmed either way: ask again later
				logf.FromContext(ctx).Info("could not confirm a missing registration", "runner", rn.Name, "error", err.Error())
				continue
			}
		}
		if err := r.requestStop(ctx, rn, LostStop(rn, r.Now())); err != nil {
			return 0, err
		}
		r.lost.clear(rn.UID)
	}
	return next, nil
}

// LostStop is the stop of a runner whose registration Forgejo deleted.
func LostStop(rn *v1alpha1.Runner, now time.Time) *v1alpha1.RunnerStop {
	return &v1alpha1.RunnerStop{
		Reason: "RegistrationGone", Outcome: v1alpha1.OutcomeRegistrationGone, RequestedAt: metav1.NewTime(now),
		Message: fmt.Sprintf("Forgejo no longer has registration %d (uuid %s), deleted while the runner waited for a task; "+
			"forgejo-runner would retry for ever, so the operator stopped it", rn.Status.Registration.ID, rn.Status.Registration.UUID),
	}
}

// requestStop marks the runner stopped (the Runner controller then deletes its pod and records
// the stop as its end).
func (r *Reconciler) requestStop(ctx context.Context, rn *v1alpha1.Runner, stop *v1alpha1.RunnerStop) error {
	patch := client.MergeFrom(rn.DeepCopy())
	rn.Status.Stop = stop
	if err := r.Client.Status().Patch(ctx, rn, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("stop runner %s: %w", rn.Name, err)
	}
	logf.FromContext(ctx).Info("stopping runner", "runner", rn.Name, "reason", stop.Reason, "uuid", rn.Status.Registration.UUID)
	return nil
}

// MayHaveTakenAJob reports whether a warm runner of the pool may hold a task Forgejo does not
// show yet: a job that fits the pool's labels started running within takeoverWindow and no
// runner of the pool is bound to it, or such a job is waiting and could be taken any moment.
func MayHaveTakenAJob(pool *v1alpha1.RunnerPool, live []v1alpha1.Runner, demand jobwatch.Demand, now time.Time) bool {
	bound := map[string]bool{}
	for _, rn := range live {
		if rn.Spec.Job != nil {
			bound[rn.Spec.Job.Handle] = true
		}
	}
	names := matching.LabelNames(pool.Spec.Labels)
	for handle, job := range demand.Known {
		if bound[handle] || !matching.Matches(job.RunsOn, names) {
			continue
		}
		if job.Waiting() || job.RunningSince.IsZero() || now.Sub(job.RunningSince) < takeoverWindow {
			return true
		}
	}
	return false
}

// idleLooks remembers when each warm runner was first found idle in a row of looks.
type idleLooks struct{ first sync.Map } // types.UID -> time.Time

// confirmed records a look at the runner; true once it has read idle on looks at least
// idleConfirmDelay apart with no other answer between them.
func (l *idleLooks) confirmed(uid types.UID, idle bool, now time.Time) bool {
	if !idle {
		l.first.Delete(uid)
		return false
	}
	at, _ := l.first.LoadOrStore(uid, now)
	return now.Sub(at.(time.Time)) >= idleConfirmDelay
}

// registeredBefore are the runners registered before t: a listing made at t can only vouch for
// those.
func registeredBefore(live []v1alpha1.Runner, t time.Time) []v1alpha1.Runner {
	var out []v1alpha1.Runner
	for _, rn := range live {
		if reg := rn.Status.Registration; reg != nil && reg.RegisteredAt != nil && reg.RegisteredAt.Time.Before(t) {
			out = append(out, rn)
		}
	}
	return out
}
