package runnerpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// DefaultHistoryLimit applies when spec.history.limit is unset.
const DefaultHistoryLimit = 20

// RunnerNameForHandle names the Runner of a job attempt: the same handle always gives the same
// name, so a second poll, a webhook or a restart finds the Runner the first one made.
func RunnerNameForHandle(pool, handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return fmt.Sprintf("%s-%s", truncate(pool, 52), hex.EncodeToString(sum[:5]))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// BuildRunner is the Runner a pool creates for a job (or, with job nil, a warm idle runner).
func BuildRunner(pool *v1alpha1.RunnerPool, name string, job *jobwatch.Job) *v1alpha1.Runner {
	runner := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: pool.Namespace,
			Labels:    map[string]string{v1alpha1.PoolLabel: runnerpod.LabelValue(pool.Name)},
		},
		Spec: v1alpha1.RunnerSpec{PoolName: pool.Name, Mode: pool.Spec.Mode},
	}
	if runner.Spec.Mode == "" {
		runner.Spec.Mode = v1alpha1.ModeEphemeral
	}
	trigger := fmt.Sprintf("pool minIdle %d (generation %d)", pool.Spec.Scaling.MinIdle, pool.Generation)
	if job != nil {
		runner.Spec.Job = &v1alpha1.JobRef{ID: job.ID, Attempt: job.Attempt, Handle: job.Handle, RunsOn: job.RunsOn,
			Repository: job.Repository, RepoID: job.RepoID}
		via := job.Via
		if via == "" {
			via = jobwatch.ViaPoll
		}
		trigger = fmt.Sprintf("job %d waiting, seen by %s", job.ID, via)
	}
	runner.Spec.Trigger = truncate(trigger, 512)
	return runner
}

// retireEnded records every ended runner in the pool's history and deletes it; it returns the
// runners still alive. The record is written before the delete, and a record of the same
// runner is never written twice, so a crash in between loses nothing and doubles nothing.
func (r *Reconciler) retireEnded(ctx context.Context, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus, runners []v1alpha1.Runner) ([]v1alpha1.Runner, error) {
	var live, ended []v1alpha1.Runner
	for _, rn := range runners {
		switch {
		case !rn.DeletionTimestamp.IsZero():
		case rn.Status.Phase == v1alpha1.RunnerFinished || rn.Status.Phase == v1alpha1.RunnerFailed:
			if meta.IsStatusConditionTrue(rn.Status.Conditions, "Deregistered") {
				ended = append(ended, rn)
			} else {
				live = append(live, rn) // still being cleaned up by the runner controller
			}
		default:
			live = append(live, rn)
		}
	}
	if len(ended) == 0 {
		return live, nil
	}
	for _, rn := range ended {
		rec := Record(&rn)
		if rec.JobResult == "" && rec.Handle != "" {
			// The job's completed event may have come after the runner's pod ended.
			rec.JobResult, _ = r.Watcher.Result(client.ObjectKeyFromObject(pool), rec.Handle)
		}
		status.RecentRunners = AddRecord(status.RecentRunners, rec, historyLimit(pool))
		var givenUp bool
		if status.JobFailures, givenUp = RecordFailure(status.JobFailures, rec, maxFailuresPerJob(pool)); givenUp {
			r.announceGivenUp(pool, rec)
		}
		if rn.Spec.Job != nil && rn.Status.Outcome == v1alpha1.OutcomeSucceeded {
			r.Watcher.Finished(client.ObjectKeyFromObject(pool), rn.Spec.Job.Handle)
		}
	}
	// Forgejo 15 sends no webhook when a job's end releases the jobs that need it, so a
	// runner's end is itself the cue to look again; the watcher coalesces these polls.
	r.Watcher.Poll(client.ObjectKeyFromObject(pool))
	if err := r.updateStatus(ctx, pool, status); err != nil {
		return nil, err
	}
	for i := range ended {
		if err := r.deleteRunner(ctx, &ended[i], "Retired", "recorded in the pool's history"); err != nil {
			return nil, fmt.Errorf("delete ended runner %s: %w", ended[i].Name, err)
		}
		logf.FromContext(ctx).Info("runner retired", "runner", ended[i].Name, "outcome", ended[i].Status.Outcome)
	}
	return live, nil
}

func historyLimit(pool *v1alpha1.RunnerPool) int {
	if pool.Spec.History.Limit != nil {
		return int(*pool.Spec.History.Limit)
	}
	return DefaultHistoryLimit
}

// Record is the history entry of an ended runner.
func Record(rn *v1alpha1.Runner) v1alpha1.RunnerRecord {
	rec := v1alpha1.RunnerRecord{
		Name:       rn.Name,
		UID:        rn.UID,
		CreatedAt:  &rn.CreationTimestamp,
		StartedAt:  rn.Status.StartedAt,
		FinishedAt: rn.Status.FinishedAt,
		Outcome:    rn.Status.Outcome,
		JobResult:  rn.Status.JobResult,
		ExitCode:   rn.Status.ExitCode,
	}
	if rec.Outcome == "" {
		rec.Outcome = v1alpha1.OutcomeError
	}
	if rn.Status.Registration != nil {
		rec.UUID = rn.Status.Registration.UUID
	}
	if rn.Spec.Job != nil {
		rec.JobID, rec.Handle, rec.Repository = rn.Spec.Job.ID, rn.Spec.Job.Handle, rn.Spec.Job.Repository
	}
	if c := meta.FindStatusCondition(rn.Status.Conditions, "Ended"); c != nil {
		rec.Reason, rec.Message = c.Reason, c.Message
	}
	return rec
}

// AddRecord puts rec first in history (newest first), unless a record of the same runner is
// already there, and keeps at most limit records. "The same runner" is the same object (uid):
// a job's successive runners share a name.
func AddRecord(history []v1alpha1.RunnerRecord, rec v1alpha1.RunnerRecord, limit int) []v1alpha1.RunnerRecord {
	if slices.ContainsFunc(history, func(h v1alpha1.RunnerRecord) bool { return h.Name == rec.Name && h.UID == rec.UID }) {
		return history
	}
	history = append([]v1alpha1.RunnerRecord{rec}, history...)
	if len(history) > limit {
		history = history[:max(limit, 0)]
	}
	return history
}

// scaleUp creates a Runner for every assigned job without one, and warm runners up to minIdle,
// never going past maxRunners. A job whose earlier runners failed waits out its backoff;
// retryIn says when the first such wait ends.
func (r *Reconciler) scaleUp(ctx context.Context, pool *v1alpha1.RunnerPool, listed, live []v1alpha1.Runner, demand jobwatch.Demand) (created []v1alpha1.Runner, retryIn time.Duration, err error) {
	now := r.Now()
	// What this pool created that the cache does not show yet counts as live; what is being
	// deleted counts until it is gone.
	have, warmPending := r.created.pending(pool.UID, listed, now)
	if have == nil {
		have = map[string]bool{}
	}
	idle := warmPending
	for _, rn := range live {
		have[rn.Name] = true
		if rn.Spec.Job == nil {
			idle++
		}
	}
	room := int(pool.Spec.Scaling.MaxRunners) - len(have) - terminating(listed)
	var wanted []*v1alpha1.Runner
	// A warm runner takes the oldest waiting job it can (Forgejo hands out the least recently
	// updated first: models/actions/task.go, GetAvailableJobsForRunner, at v15.0.3), so the oldest jobs are left to the idle warm runners for a while instead of
	// each getting a runner that would wait out its job's run elsewhere.
	warm := warmIdle(live)
	for _, job := range demand.Assigned {
		name := RunnerNameForHandle(pool.Name, job.Handle)
		if have[name] {
			continue
		}
		if left := warmServesWithin - now.Sub(job.SeenAt); warm > 0 && left > 0 {
			warm--
			if retryIn == 0 || left < retryIn {
				retryIn = left
			}
			continue
		}
		wait, given := jobRetryDelay(pool, job.Handle, now)
		if given {
			continue // reported by the JobsFailing condition
		}
		if wait > 0 {
			if retryIn == 0 || wait < retryIn {
				retryIn = wait
			}
			continue
		}
		wanted = append(wanted, BuildRunner(pool, name, &job))
	}
	if idle < int(pool.Spec.Scaling.MinIdle) {
		if wait := warmRetryDelay(pool.Status.RecentRunners, now); wait > 0 {
			if retryIn == 0 || wait < retryIn {
				retryIn = wait
			}
		} else {
			for i := idle; i < int(pool.Spec.Scaling.MinIdle); i++ {
				wanted = append(wanted, BuildRunner(pool, "", nil))
			}
		}
	}
	wanted = wanted[:min(len(wanted), max(room, 0))]
	// A job is claimed before its Runner is made: the claim fails if another pool holds it.
	key := client.ObjectKeyFromObject(pool)
	claimed := wanted[:0]
	for _, runner := range wanted {
		if h := handleOf(runner); h == "" || r.Watcher.Claim(h, key) {
			claimed = append(claimed, runner)
		}
	}
	wanted = claimed
	for _, runner := range wanted {
		if runner.Name == "" {
			runner.GenerateName = truncate(pool.Name, 52) + "-idle-"
		}
		if err := controllerutil.SetControllerReference(pool, runner, r.Client.Scheme()); err != nil {
			return nil, retryIn, fmt.Errorf("own runner: %w", err)
		}
	}
	// Created side by side: one at a time, a burst of fifty jobs would wait on fifty round
	// trips to the API server before its last runner exists.
	errs := make([]error, len(wanted))
	var wg sync.WaitGroup
	slots := make(chan struct{}, createConcurrency)
	for i, runner := range wanted {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if errs[i] = r.Client.Create(ctx, runner); errs[i] == nil {
				r.Journal.Runner(runner, journal.Created(runner))
			}
		})
	}
	wg.Wait()
	var failed []error
	for i, runner := range wanted {
		switch {
		case errs[i] == nil:
			created = append(created, *runner)
			r.created.add(pool.UID, runner.Name, runner.Spec.Job == nil, now)
		case !apierrors.IsAlreadyExists(errs[i]): // one that exists was made by an earlier reconcile
			failed = append(failed, errs[i])
			if h := handleOf(runner); h != "" {
				r.Watcher.Unclaim(h, key)
			}
		}
	}
	if len(failed) > 0 {
		return created, retryIn, fmt.Errorf("create runners for pool %s: %w", pool.Name, errors.Join(failed...))
	}
	return created, retryIn, nil
}

// createConcurrency is how many Runners a pool creates at once.
const createConcurrency = 8

// warmServesWithin is how long a job is left to an idle warm runner before it gets a runner of
// its own: should the warm runner not take it (a broken one, a job it cannot see), the job waits
// no longer than this.
const warmServesWithin = 20 * time.Second

// warmIdle counts the warm runners ready to take a job: running, idle, not being stopped.
func warmIdle(live []v1alpha1.Runner) int {
	n := 0
	for _, rn := range live {
		if rn.Spec.Job == nil && rn.Status.Phase == v1alpha1.RunnerIdle && rn.Status.Stop == nil && rn.DeletionTimestamp.IsZero() {
			n++
		}
	}
	return n
}

// handlesOf are the jobs the runners were made for.
func handlesOf(runners []v1alpha1.Runner) []string {
	var out []string
	for i := range runners {
		if h := handleOf(&runners[i]); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func handleOf(rn *v1alpha1.Runner) string {
	if rn.Spec.Job == nil {
		return ""
	}
	return rn.Spec.Job.Handle
}

// writeStatus derives the counts from the live runners and the demand, sets Ready, and writes
// status if it changed.
func (r *Reconciler) writeStatus(ctx context.Context, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus, live []v1alpha1.Runner, demand jobwatch.Demand) error {
	status.Current = int32(len(live))
	status.Idle, status.Busy = 0, 0
	for _, rn := range live {
		h := handleOf(&rn)
		if job, ok := demand.Known[h]; ok && h != "" && !job.Waiting() {
			status.Busy++
		} else if rn.Status.Phase == v1alpha1.RunnerIdle {
			status.Idle++
		}
	}
	status.PendingJobs = int32(len(demand.Assigned))
	if demand.Err == nil && !demand.PolledAt.IsZero() {
		status.JobFailures = ForgetFailures(status.JobFailures, demand.Known)
	}
	setJobsFailing(status, pool)
	status.Desired = min(pool.Spec.Scaling.MaxRunners, int32(len(demand.Assigned))+pool.Spec.Scaling.MinIdle)

	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "Serving",
		Message: "runners are created for waiting jobs", ObservedGeneration: pool.Generation}
	if c := meta.FindStatusCondition(status.Conditions, ConditionForgejoReachable); c == nil || c.Status != metav1.ConditionTrue {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "ForgejoUnreachable", "see the ForgejoReachable condition"
	}
	meta.SetStatusCondition(&status.Conditions, ready)
	return r.updateStatus(ctx, pool, status)
}

func (r *Reconciler) updateStatus(ctx context.Context, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus) error {
	if equality.Semantic.DeepEqual(&pool.Status, status) {
		return nil
	}
	patch, err := StatusPatch(&pool.Status, status, pool.ResourceVersion)
	if err != nil {
		return fmt.Errorf("update status of pool %s: %w", pool.Name, err)
	}
	pool.Status = *status
	if err := r.Client.Status().Patch(ctx, pool, patch); err != nil {
		return fmt.Errorf("update status of pool %s: %w", pool.Name, err)
	}
	return nil
}
