// Package runner reconciles Runners: one Forgejo registration, the Secret that carries its
// token, and the pod that runs it. The RunnerPool controller creates and deletes Runners; this
// controller brings each one up, watches its pod end, records how it ended and makes sure its
// registration is gone from Forgejo.
package runner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/conflicts"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
)

// Finalizer keeps a Runner until its Forgejo registration is deleted.
const Finalizer = "forgejo.brooktrails.org/deregister"

// Reconciler reconciles Runners.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache, where a stale answer would cost a registration.
	APIReader client.Reader
	Forgejo   *poolconn.Factory
	Now       func() time.Time
	// Jobs tells whether a runner's job has been picked; nil leaves runners Idle until they end.
	Jobs JobSource
	// Concurrency is how many Runners are reconciled at once (default DefaultConcurrency):
	// each waits on Forgejo and the API server, so one at a time would queue a burst.
	Concurrency int
	// Journal records transitions and audits actions; nil records nothing.
	Journal *journal.Journal
	// DeregisterDeadline is how long a Runner being deleted waits, from its deletion, for its
	// registration to be confirmed gone before it goes without (default
	// DefaultDeregisterDeadline).
	DeregisterDeadline time.Duration
	// Recorder receives the Warning Event of a deregistration given up; nil sends none.
	Recorder journal.KubeRecorder
	// Metrics count deregistrations given up; nil counts nothing.
	Metrics *opmetrics.Metrics
	// Clients remembers each pool's last Forgejo client, to deregister with once the pool's
	// token Secret is gone; nil remembers nothing.
	Clients *ClientMemory

	// podCreated remembers when each runner's pod was created, to the nanosecond the pod's
	// own timestamp lacks; after a restart the pod's timestamp stands in.
	podCreated sync.Map // types.UID -> time.Time
	// registering holds the Runners this process has tried to register, until they go.
	registering sync.Map // types.UID -> bool
	// registrationGone holds the Runners whose registration Forgejo was seen not to have when
	// their end was recorded, so deregistering them asks Forgejo nothing more.
	registrationGone sync.Map // types.UID -> bool
}

// JobSource is what the Runner controller asks about a runner's job; *jobwatch.Watcher is one.
type JobSource interface {
	Job(pool types.NamespacedName, handle string) (jobwatch.Job, bool)
	Result(pool types.NamespacedName, handle string) (string, bool)
}

// DefaultConcurrency is the default number of Runners reconciled at once.
const DefaultConcurrency = 8

// SetupWithManager registers the controller; it watches the pods and Secrets Runners own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Concurrency <= 0 {
		r.Concurrency = DefaultConcurrency
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Runner{}).
		Owns(&corev1.Pod{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Concurrency}).
		Named("runner").
		Complete(r)
}

// Reconcile brings one Runner a step closer to its end: registered, credentials written, pod
// running, and once the pod has ended, deregistered with its outcome recorded.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	return conflicts.Retry(ctx, res, err)
}

func (r *Reconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var runner v1alpha1.Runner
	if err := r.Client.Get(ctx, req.NamespacedName, &runner); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := logf.FromContext(ctx).WithValues("pool", runner.Spec.PoolName)
	ctx = logf.IntoContext(ctx, log)

	var pool v1alpha1.RunnerPool
	poolErr := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runner.Spec.PoolName}, &pool)
	if poolErr != nil && (!apierrors.IsNotFound(poolErr) || runner.DeletionTimestamp.IsZero()) {
		return ctrl.Result{}, fmt.Errorf("get pool %s: %w", runner.Spec.PoolName, poolErr)
	}
	fj := &lazyForgejo{build: func() (*forgejo.Client, error) { return r.forgejoClient(ctx, &runner, &pool, poolErr) }}

	if !runner.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, fj, &runner)
	}
	if runner.Status.Phase == "" {
		// The pool records the creation; this covers a pool that stopped right after creating.
		r.Journal.Runner(&runner, journal.Created(&runner))
	}
	if controllerutil.AddFinalizer(&runner, Finalizer) {
		if err := r.Client.Update(ctx, &runner); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	if ended(&runner) {
		return ctrl.Result{}, r.cleanUp(ctx, fj, &runner)
	}
	if runner.Status.Stop != nil {
		return r.stop(ctx, fj, &runner)
	}
	if err := r.ensureRegistration(ctx, fj, &pool, &runner); err != nil {
		return ctrl.Result{}, err
	}
	pod, err := r.ensurePod(ctx, &pool, &runner)
	if errors.Is(err, errEarlierPod) {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if err != nil || pod == nil {
		return ctrl.Result{}, err // no pod, no error: the runner ended without one
	}
	if err := r.observePod(ctx, fj, &runner, pod); err != nil {
		return ctrl.Result{}, err
	}
	return r.observeJob(ctx, &runner)
}

func ended(runner *v1alpha1.Runner) bool {
	return runner.Status.Phase == v1alpha1.RunnerFinished || runner.Status.Phase == v1alpha1.RunnerFailed
}

// forgejoClient builds the client of the runner's pool (whose Get gave poolErr). A Runner on its
// way out whose pool's token Secret cannot be read deregisters with the copy of the token the
// pool keeps for that (deleting a namespace may delete the Secret first); failing that, or when
// its pool is gone, with the pool's last client this process built, if any.
func (r *Reconciler) forgejoClient(ctx context.Context, runner *v1alpha1.Runner, pool *v1alpha1.RunnerPool, poolErr error) (*forgejo.Client, error) {
	poolUID := pool.UID
	var err error
	if poolErr != nil {
		err = fmt.Errorf("%w: %s/%s: %w", errPoolGone, runner.Namespace, runner.Spec.PoolName, poolErr)
		if owner := metav1.GetControllerOf(runner); owner != nil {
			poolUID = owner.UID
		}
	} else {
		c, _, cerr := r.Forgejo.Client(ctx, pool)
		if cerr == nil {
			r.Clients.Remember(pool.UID, c)
			return c, nil
		}
		err = fmt.Errorf("forgejo client for pool %s: %w", pool.Name, cerr)
	}
	leaving := !runner.DeletionTimestamp.IsZero() || ended(runner)
	if leaving && poolErr == nil && errors.Is(err, poolconn.ErrTokenSecret) {
		c, kerr := r.Forgejo.KeptClient(ctx, pool)
		if kerr == nil {
			logf.FromContext(ctx).Info("the pool's token Secret cannot be read; deregistering with the copy the pool keeps for that",
				"runner", runner.Name, "reason", err.Error())
			return c, nil
		}
		err = fmt.Errorf("%w; and %w", err, kerr)
	}
	if leaving && (poolErr != nil || errors.Is(err, poolconn.ErrTokenSecret)) {
		if c, ok := r.Clients.Last(poolUID); ok {
			logf.FromContext(ctx).Info("the pool's token cannot be read; deregistering with the token last read for the pool",
				"runner", runner.Name, "reason", err.Error())
			return c, nil
		}
	}
	return nil, err
}

// finalize deletes the pod, then the registration, and lets the Runner go; its Secret follows
// through its owner reference. The pod goes first, so that no job runs on a runner whose
// registration is being removed, and its runner process no longer holds the registration. Should
// deregistering keep failing (the pool's token Secret deleted with its namespace, the pool gone,
// Forgejo refusing or down), the Runner goes all the same once DeregisterDeadline has passed since
// its deletion, with a Warning Event, an audit record and a metric: its registration carries the
// pool's marker, for the pool's garbage collection.
func (r *Reconciler) finalize(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(runner, Finalizer) {
		return ctrl.Result{}, nil
	}
	// Whoever deleted the Runner (the pool, or a user) is recorded; the pool records its reason
	// first, and then this event is a repeat and dropped.
	reason := r.Journal.DeletionReason(runner.UID)
	switch {
	case reason != "":
	case ended(runner):
		reason = "Retired" // its pool retires a runner once it has ended
	default:
		reason = "RunnerDeleted"
	}
	r.Journal.Runner(runner, journal.Deleted(runner, reason, "the Runner was deleted", r.Now()))
	trigger := "Runner deleted: " + reason
	if err := r.deletePod(ctx, runner, trigger); err != nil {
		return ctrl.Result{}, err
	}
	giveUp, retryIn := deregisterDecision(runner.DeletionTimestamp.Time, r.Now(), r.deregisterDeadline())
	gone, err := r.podGone(ctx, runner)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !gone && !giveUp {
		// Its deletion wakes this Runner up (it owns the pod); the requeue is the fallback.
		return ctrl.Result{RequeueAfter: retryIn}, nil
	}
	if err := r.deregister(ctx, fj, runner, trigger); err != nil {
		if !giveUp {
			logf.FromContext(ctx).Error(err, "deregistering a deleted runner; trying again until its deadline",
				"runner", runner.Name, "retryIn", retryIn.String(),
				"deadline", runner.DeletionTimestamp.Add(r.deregisterDeadline()).UTC().Format(time.RFC3339))
			return ctrl.Result{RequeueAfter: retryIn}, nil
		}
		r.abandonDeregistration(ctx, runner, trigger, err)
	}
	r.podCreated.Delete(runner.UID)
	r.registering.Delete(runner.UID)
	r.registrationGone.Delete(runner.UID)
	controllerutil.RemoveFinalizer(runner, Finalizer)
	if err := r.Client.Update(ctx, runner); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

// createdBy says what made the pool create the runner.
func createdBy(rn *v1alpha1.Runner) string {
	if t := rn.Spec.Trigger; t != "" {
		return t
	}
	return "created by pool " + rn.Spec.PoolName
}

// auditRecord starts an audit record of an action on one of the runner's things.
func (r *Reconciler) auditRecord(rn *v1alpha1.Runner, action, id, object, trigger string) audit.Record {
	details := map[string]string{}
	if rn.Spec.Job != nil {
		details["job"] = strconv.FormatInt(rn.Spec.Job.ID, 10)
	}
	return audit.Record{
		ID: id, Action: action, Namespace: rn.Namespace, Pool: rn.Spec.PoolName, Runner: rn.Name,
		Object: object, Actor: audit.Actor{Identity: r.Journal.Identity(), Trigger: trigger}, Details: details,
	}
}

func (r *Reconciler) audit(rn *v1alpha1.Runner, action, id, object, trigger string) {
	r.Journal.Audit(r.auditRecord(rn, action, id, object, trigger))
}

// podCreatedAt is when the runner's pod was created, as exactly as known.
func (r *Reconciler) podCreatedAt(rn *v1alpha1.Runner, pod *corev1.Pod) time.Time {
	if at, ok := r.podCreated.Load(rn.UID); ok {
		return at.(time.Time)
	}
	return pod.CreationTimestamp.Time
}

// runningSince is when the runner's job was seen running, else when the runner started.
func (r *Reconciler) runningSince(rn *v1alpha1.Runner) time.Time {
	if r.Jobs != nil && rn.Spec.Job != nil {
		if job, ok := r.Jobs.Job(types.NamespacedName{Namespace: rn.Namespace, Name: rn.Spec.PoolName}, rn.Spec.Job.Handle); ok && !job.RunningSince.IsZero() {
			return job.RunningSince
		}
	}
	if rn.Status.StartedAt != nil {
		return rn.Status.StartedAt.Time
	}
	return r.Now() // never seen running: no execution time to speak of
}

// lazyForgejo builds the pool's Forgejo client on first use. Most reconciles of a live runner
// (its pod starting or running, its job being watched) make no Forgejo call, and building a
// client reads the pool's token Secret from the API server.
type lazyForgejo struct {
	build  func() (*forgejo.Client, error)
	client *forgejo.Client
	err    error
	built  bool
}

func (l *lazyForgejo) get() (*forgejo.Client, error) {
	if !l.built {
		l.client, l.err = l.build()
		l.built = true
	}
	return l.client, l.err
}
