// Package runner reconciles Runners: one Forgejo registration, the Secret that carries its
// token, and the pod that runs it. The RunnerPool controller creates and deletes Runners; this
// controller brings each one up, watches its pod end, records how it ended and makes sure its
// registration is gone from Forgejo.
package runner

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
)

// Finalizer keeps a Runner until its Forgejo registration is deleted.
const Finalizer = "forgejo.brooktrails.org/deregister"

// Reconciler reconciles Runners.
type Reconciler struct {
	Client  client.Client
	Forgejo *poolconn.Factory
	Now     func() time.Time
	// Jobs tells whether a runner's job has been picked; nil leaves runners Idle until they end.
	Jobs JobSource
	// Concurrency is how many Runners are reconciled at once (default DefaultConcurrency):
	// each waits on Forgejo and the API server, so one at a time would queue a burst.
	Concurrency int
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
	var runner v1alpha1.Runner
	if err := r.Client.Get(ctx, req.NamespacedName, &runner); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := logf.FromContext(ctx).WithValues("pool", runner.Spec.PoolName)
	ctx = logf.IntoContext(ctx, log)

	var pool v1alpha1.RunnerPool
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runner.Spec.PoolName}, &pool); err != nil {
		return ctrl.Result{}, fmt.Errorf("get pool %s: %w", runner.Spec.PoolName, err)
	}
	fj := &lazyForgejo{build: func() (*forgejo.Client, error) {
		c, _, err := r.Forgejo.Client(ctx, &pool)
		if err != nil {
			return nil, fmt.Errorf("forgejo client for pool %s: %w", pool.Name, err)
		}
		return c, nil
	}}

	if !runner.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, fj, &runner)
	}
	if controllerutil.AddFinalizer(&runner, Finalizer) {
		if err := r.Client.Update(ctx, &runner); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	if ended(&runner) {
		return ctrl.Result{}, r.cleanUp(ctx, fj, &runner)
	}
	if err := r.ensureRegistration(ctx, fj, &pool, &runner); err != nil {
		return ctrl.Result{}, err
	}
	pod, err := r.ensurePod(ctx, &pool, &runner)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.observePod(ctx, fj, &runner, pod); err != nil {
		return ctrl.Result{}, err
	}
	return r.observeJob(ctx, &runner)
}

func ended(runner *v1alpha1.Runner) bool {
	return runner.Status.Phase == v1alpha1.RunnerFinished || runner.Status.Phase == v1alpha1.RunnerFailed
}

// finalize deletes the registration and lets the Runner go; its pod and Secret follow through
// their owner references.
func (r *Reconciler) finalize(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) error {
	if !controllerutil.ContainsFinalizer(runner, Finalizer) {
		return nil
	}
	if err := deregister(ctx, fj, runner); err != nil {
		return err
	}
	controllerutil.RemoveFinalizer(runner, Finalizer)
	if err := r.Client.Update(ctx, runner); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
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
