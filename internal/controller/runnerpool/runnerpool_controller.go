// Package runnerpool reconciles RunnerPools: it turns the jobs waiting for a pool into Runners
// (one per job handle, never more than maxRunners), keeps minIdle warm runners, records every
// ended runner in the pool's history before deleting it, and reports what it sees in status.
package runnerpool

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/conflicts"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// Finalizer keeps a pool until its runners, and so their registrations, are gone.
const Finalizer = "forgejo.brooktrails.org/runners"

// Condition types of a RunnerPool.
const (
	ConditionReady            = "Ready"
	ConditionForgejoReachable = "ForgejoReachable"
)

// Reconciler reconciles RunnerPools.
type Reconciler struct {
	Client  client.Client
	Forgejo *poolconn.Factory
	Watcher *jobwatch.Watcher
	// Events carries the watcher's "demand changed" notices into the work queue.
	Events chan event.TypedGenericEvent[*v1alpha1.RunnerPool]
	// Resync is how often a pool is reconciled without any change (default one minute).
	Resync time.Duration
	// JobGoneGrace is how long a runner may outlive its job's leaving the jobs list
	// (default DefaultJobGoneGrace).
	JobGoneGrace time.Duration
	// GCInterval is how often registrations are checked for orphans (default DefaultGCInterval).
	GCInterval time.Duration
	Now        func() time.Time
	// Journal records runner transitions and audits pool actions; nil records nothing.
	Journal *journal.Journal
	// Metrics count retired runners and collected orphans; nil counts nothing.
	Metrics *opmetrics.Metrics
	// Recorder receives Events on pools the journal does not send; nil sends none.
	Recorder journal.KubeRecorder
	// Clients holds each pool's last Forgejo client, for the last garbage collection of a pool
	// whose token Secret is gone; nil holds none.
	Clients *runner.ClientMemory

	gc orphanCollector
	// lost holds runners a listing found without their registration, until confirmed.
	lost lostTracker
	// idle holds the first of a row of idle looks at each warm runner.
	idle idleLooks
	// deleted remembers the Runners this controller deleted until the cache stops showing
	// them: a reconcile on a stale cache must not count them, or it would delete others.
	deleted sync.Map // types.UID -> time.Time
	// created are the Runners created that the cache may not show yet.
	created creations
	// Workers is how many pools are reconciled at once; 0 means DefaultWorkers.
	Workers int
	// Privilege decides where Privileged DinD may run; its zero value allows it nowhere.
	Privilege PrivilegeGate
}

// deleteRunner deletes a Runner for reason, remembers it as gone and records its last event.
// The event follows the delete: a delete that fails leaves the decision open, and the event,
// once written, is final. The reason is handed to the Runner's finalizer before, so that the
// finalizer, which may run first, records the same one.
func (r *Reconciler) deleteRunner(ctx context.Context, rn *v1alpha1.Runner, reason, message string) error {
	r.deleted.Store(rn.UID, r.Now())
	r.Journal.WillDelete(rn.UID, reason)
	if err := r.Client.Delete(ctx, rn); client.IgnoreNotFound(err) != nil {
		return err
	}
	r.Journal.Runner(rn, journal.Deleted(rn, reason, message, r.Now()))
	return nil
}

// Notify is the watcher's callback: it queues a reconcile of the pool.
func (r *Reconciler) Notify(key types.NamespacedName) {
	pool := &v1alpha1.RunnerPool{}
	pool.Namespace, pool.Name = key.Namespace, key.Name
	r.Events <- event.TypedGenericEvent[*v1alpha1.RunnerPool]{Object: pool}
}

// SetupWithManager registers the controller, watching the pool's Runners and the watcher.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Resync == 0 {
		r.Resync = time.Minute
	}
	return ctrl.ControllerManagedBy(mgr).
		For(&v1alpha1.RunnerPool{}).
		Owns(&v1alpha1.Runner{}).
		WatchesRawSource(source.Channel(r.Events, &handler.TypedEnqueueRequestForObject[*v1alpha1.RunnerPool]{})).
		Named("runnerpool").
		// Pools are reconciled side by side; one pool is never reconciled twice at once (the
		// queue's guarantee), and what pools share (the dispatcher's claims, the collectors) is
		// locked.
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultWorkers)}).
		Complete(r)
}

// DefaultWorkers is how many pools are reconciled at once.
const DefaultWorkers = 4

// Reconcile makes a pool's Runners match its demand and records what it saw.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req)
	return conflicts.Retry(ctx, res, err)
}

func (r *Reconciler) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pool v1alpha1.RunnerPool
	if err := r.Client.Get(ctx, req.NamespacedName, &pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.Watcher.Unregister(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	runners, err := r.listRunners(ctx, &pool)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !pool.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &pool, runners)
	}
	if controllerutil.AddFinalizer(&pool, Finalizer) {
		r.auditPool(&pool, audit.ActionPoolCreated, "pool.created:"+string(pool.UID),
			"created by "+fieldManager(&pool, false), nil)
		if err := r.Client.Update(ctx, &pool); err != nil {
			return reconcile.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	} else if seen := pool.Status.ObservedGeneration; seen != 0 && seen != pool.Generation {
		r.auditPool(&pool, audit.ActionPoolChanged, fmt.Sprintf("pool.changed:%s:%d", pool.UID, pool.Generation),
			fmt.Sprintf("spec change (generation %d) by %s", pool.Generation, fieldManager(&pool, true)),
			map[string]string{"generation": strconv.FormatInt(pool.Generation, 10), "previousGeneration": strconv.FormatInt(seen, 10)})
	}

	if r.Metrics != nil {
		r.Metrics.PoolSeen(pool.Namespace, pool.Name)
	}
	status := pool.Status.DeepCopy()
	status.ObservedGeneration = pool.Generation
	live, err := r.retireEnded(ctx, &pool, status, runners)
	if err != nil {
		return reconcile.Result{}, err
	}

	if reason, msg := unsupported(&pool); reason != "" {
		// Say so rather than start runners the pool did not ask for.
		r.Watcher.Unregister(req.NamespacedName)
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
			Reason: reason, Message: msg, ObservedGeneration: pool.Generation})
		return r.done(r.updateStatus(ctx, &pool, status))
	}
	if refused, result, err := r.refusePrivileged(ctx, &pool, status, live); refused {
		return result, err
	}
	fj, conn, err := r.Forgejo.Client(ctx, &pool)
	if err != nil {
		r.setReachable(status, &pool, err)
		return r.done(r.writeStatus(ctx, &pool, status, live, jobwatch.Demand{}))
	}
	if token, err := r.Forgejo.Token(ctx, &pool); err == nil {
		if err := r.keepToken(ctx, &pool, token); err != nil {
			// The copy matters only if the pool's Secret goes before its runners do; the pool
			// serves its jobs meanwhile, and the next reconcile tries again.
			logf.FromContext(ctx).Error(err, "keeping a copy of the pool's token for deregistration")
		}
	}
	r.Watcher.Register(matching.PoolOf(&pool), conn, fj)
	// Every Runner the pool has, ending ones included, holds its job: no other pool makes one.
	r.Watcher.Hold(req.NamespacedName, handlesOf(runners))
	demand := r.Watcher.Demand(req.NamespacedName)
	if demand.PolledAt.IsZero() && demand.Err == nil {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionForgejoReachable, Status: metav1.ConditionUnknown,
			Reason: "FirstPoll", Message: "the first list of jobs is on its way", ObservedGeneration: pool.Generation})
	} else {
		r.setReachable(status, &pool, r.explainPollError(ctx, fj, demand.Err))
		if demand.Err == nil {
			reportRegistrationRefusal(status, &pool, live)
		}
	}

	var goneIn time.Duration
	if live, goneIn, err = r.endRunnersWithoutJob(ctx, &pool, status, live, demand); err != nil {
		return reconcile.Result{}, err
	}
	if live, err = r.scaleDown(ctx, fj, &pool, status, live, demand); err != nil {
		return reconcile.Result{}, err
	}
	if demand.Err == nil && r.gc.due(pool.UID, r.Now(), r.gcInterval()) {
		listed, listedAt, err := r.gc.collect(ctx, fj, conn, r.gcInterval(), &pool, registrationIDs(runners), r.orphanDeleted)
		if err != nil {
			// Orphans cost only a stale entry in Forgejo's list; the next pass tries again.
			logf.FromContext(ctx).Error(err, "garbage collection of registrations")
		} else {
			for _, rn := range LostCandidates(registeredBefore(live, listedAt), listed) {
				r.lost.suspect(rn.UID, r.Now())
			}
		}
	}
	lostCheckIn, err := r.stopLostRunners(ctx, fj, live)
	if err != nil {
		return reconcile.Result{}, err
	}
	deadlineIn, err := r.stopUnstarted(ctx, &pool, live)
	if err != nil {
		return reconcile.Result{}, err
	}
	retryIn := time.Duration(0)
	if demand.Err == nil && !demand.PolledAt.IsZero() {
		var created []v1alpha1.Runner
		created, retryIn, err = r.scaleUp(ctx, &pool, runners, live, demand)
		if err != nil {
			return reconcile.Result{}, err
		}
		live = append(live, created...)
	}
	result, err := r.done(r.writeStatus(ctx, &pool, status, live, demand))
	if err == nil && retryIn > 0 && retryIn < result.RequeueAfter {
		result.RequeueAfter = retryIn
	}
	if err == nil && lostCheckIn > 0 && lostCheckIn < result.RequeueAfter {
		result.RequeueAfter = lostCheckIn
	}
	for _, in := range []time.Duration{deadlineIn, goneIn} {
		if err == nil && in > 0 && in < result.RequeueAfter {
			result.RequeueAfter = in
		}
	}
	// Garbage collection runs in reconciles: an interval shorter than the resync is kept
	// only if the pool is looked at that often, busy or not.
	if err == nil && r.gcInterval() < result.RequeueAfter {
		result.RequeueAfter = r.gcInterval()
	}
	return result, err
}

// auditPool records an action on the pool itself.
func (r *Reconciler) auditPool(pool *v1alpha1.RunnerPool, action, id, trigger string, details map[string]string) {
	r.Journal.Audit(audit.Record{
		ID: id, Action: action, Namespace: pool.Namespace, Pool: pool.Name,
		Object: fmt.Sprintf("RunnerPool %s/%s (uid %s)", pool.Namespace, pool.Name, pool.UID),
		Actor:  audit.Actor{Identity: r.Journal.Identity(), Trigger: trigger}, Details: details,
	})
}

// orphanDeleted records a registration garbage collection deleted.
func (r *Reconciler) orphanDeleted(pool *v1alpha1.RunnerPool, reg forgejo.Runner, result string) {
	r.Journal.Audit(audit.Record{
		ID: "registration.deleted:" + reg.UUID, Action: audit.ActionRegistrationDeleted, Namespace: pool.Namespace, Pool: pool.Name,
		Object:  fmt.Sprintf("registration %d (uuid %s, name %s)", reg.ID, reg.UUID, reg.Name),
		Actor:   audit.Actor{Identity: r.Journal.Identity(), Trigger: "garbage collection: the registration carries the pool's marker but no Runner holds it"},
		Details: map[string]string{"result": result},
	})
	if r.Metrics != nil {
		r.Metrics.OrphanCollected(pool.Namespace, pool.Name)
	}
}

// fieldManager names who last changed (latest) or first wrote (!latest) the pool's spec, from
// its managed fields: "kubectl-client-side-apply", "kubectl", "argocd-controller"...
func fieldManager(pool *v1alpha1.RunnerPool, latest bool) string {
	var name string
	var at time.Time
	for _, mf := range pool.ManagedFields {
		if mf.Subresource != "" || mf.FieldsV1 == nil || !bytes.Contains(mf.FieldsV1.GetRawBytes(), []byte(`"f:spec"`)) || mf.Time == nil {
			continue
		}
		if name == "" || (latest && mf.Time.After(at)) || (!latest && mf.Time.Time.Before(at)) {
			name, at = mf.Manager, mf.Time.Time
		}
	}
	if name == "" {
		return "an unknown field manager"
	}
	return name
}

func registrationIDs(runners []v1alpha1.Runner) map[int64]bool {
	ids := map[int64]bool{}
	for _, rn := range runners {
		if rn.Status.Registration != nil {
			ids[rn.Status.Registration.ID] = true
		}
	}
	return ids
}

func (r *Reconciler) gcInterval() time.Duration {
	if r.GCInterval > 0 {
		return r.GCInterval
	}
	return DefaultGCInterval
}

// done ends a reconcile: on success the pool is looked at again after Resync even if nothing
// changes, so a missed notification cannot strand a job.
func (r *Reconciler) done(err error) (reconcile.Result, error) {
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: r.Resync}, nil
}

func (r *Reconciler) listRunners(ctx context.Context, pool *v1alpha1.RunnerPool) ([]v1alpha1.Runner, error) {
	var list v1alpha1.RunnerList
	if err := r.Client.List(ctx, &list, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.PoolLabel: runnerpod.LabelValue(pool.Name)}); err != nil {
		return nil, fmt.Errorf("list runners of pool %s: %w", pool.Name, err)
	}
	var owned []v1alpha1.Runner
	for _, rn := range list.Items {
		if _, gone := r.deleted.Load(rn.UID); gone && rn.DeletionTimestamp.IsZero() {
			continue // deleted by us; the cache has not caught up
		}
		if rn.Spec.PoolName == pool.Name {
			owned = append(owned, rn)
		}
	}
	// The cache catches up within seconds; a minute is ample.
	r.deleted.Range(func(key, at any) bool {
		if r.Now().Sub(at.(time.Time)) > time.Minute {
			r.deleted.Delete(key)
		}
		return true
	})
	return owned, nil
}

// finalize deletes every Runner (whose own finalizer deletes its registration) and lets the
// pool go once none is left, after a last garbage collection of the registrations it marked:
// those of Runners let go at their deregistration deadline, and those of a crash.
func (r *Reconciler) finalize(ctx context.Context, pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner) (reconcile.Result, error) {
	if len(runners) > 0 {
		for i := range runners {
			if runners[i].DeletionTimestamp.IsZero() {
				if err := r.deleteRunner(ctx, &runners[i], "PoolDeleted", "the RunnerPool is being deleted"); err != nil {
					return reconcile.Result{}, fmt.Errorf("delete runner %s: %w", runners[i].Name, err)
				}
			}
		}
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	r.Watcher.Unregister(client.ObjectKeyFromObject(pool))
	if controllerutil.ContainsFinalizer(pool, Finalizer) {
		r.collectLast(ctx, pool)
	}
	if err := r.releaseToken(ctx, pool); err != nil {
		return reconcile.Result{}, err
	}
	r.gc.forget(pool.UID)
	r.created.forget(pool.UID)
	if controllerutil.ContainsFinalizer(pool, Finalizer) {
		r.auditPool(pool, audit.ActionPoolDeleted, "pool.deleted:"+string(pool.UID), "RunnerPool deleted; its runners are gone", nil)
	}
	if r.Metrics != nil {
		r.Metrics.PoolGone(pool.Namespace, pool.Name)
	}
	if controllerutil.RemoveFinalizer(pool, Finalizer) {
		if err := r.Client.Update(ctx, pool); err != nil {
			return reconcile.Result{}, fmt.Errorf("remove finalizer: %w", err)
		}
	}
	r.Clients.Forget(pool.UID)
	return reconcile.Result{}, nil
}

// lastCollectionTimeout bounds a deleted pool's last garbage collection: it is best effort, and
// must not hold up the pool's deletion (or its namespace's) for long.
const lastCollectionTimeout = 30 * time.Second

// collectLast deletes the registrations the pool marked and no Runner holds, once its Runners
// are gone. It reads the pool's token, or, once the token Secret is gone (deleting a namespace
// deletes it early), uses the copy the pool keeps, or the pool's last client; with none it says
// so and does nothing.
// Whatever it cannot delete stays in Forgejo, offline: no other pool's collection touches it.
func (r *Reconciler) collectLast(ctx context.Context, pool *v1alpha1.RunnerPool) {
	log := logf.FromContext(ctx)
	fj, _, err := r.Forgejo.CleanupClient(ctx, pool)
	if err != nil {
		last, ok := r.Clients.Last(pool.UID)
		if !ok {
			log.Info("skipping the last garbage collection of the deleted pool's registrations: its token cannot be read", "reason", err.Error())
			r.event(pool, corev1.EventTypeWarning, "LastCollectionSkipped",
				"skipped the last garbage collection of the pool's registrations, its token cannot be read: "+err.Error())
			return
		}
		fj = last
	}
	ctx, cancel := context.WithTimeout(ctx, lastCollectionTimeout)
	defer cancel()
	n, err := r.gc.collectLast(ctx, fj, pool, r.orphanDeleted)
	if err != nil {
		log.Error(err, "last garbage collection of the deleted pool's registrations", "deleted", n)
		r.event(pool, corev1.EventTypeWarning, "LastCollectionFailed",
			fmt.Sprintf("the last garbage collection of the pool's registrations deleted %d and failed: %v", n, err))
		return
	}
	if n > 0 {
		log.Info("last garbage collection deleted the deleted pool's registrations", "deleted", n)
	}
}

func (r *Reconciler) event(pool *v1alpha1.RunnerPool, eventType, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(pool, nil, eventType, reason, "CollectGarbage", "%s", note)
	}
}

// setReachable sets ForgejoReachable from the last error talking to Forgejo, with a message
// that says what to fix.
func (r *Reconciler) setReachable(status *v1alpha1.RunnerPoolStatus, pool *v1alpha1.RunnerPool, err error) {
	cond := metav1.Condition{Type: ConditionForgejoReachable, Status: metav1.ConditionTrue, Reason: "JobsListed",
		Message: "the jobs of the pool's scope are listed", ObservedGeneration: pool.Generation}
	if err != nil {
		cond.Status = metav1.ConditionFalse
		cond.Reason, cond.Message = poolconn.Explain(pool, err)
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

// reportRegistrationRefusal makes ForgejoReachable say why Forgejo refuses to register the pool's
// runners, when it does: a token may list jobs (read:) and yet not register runners (write:), and
// the pool would otherwise look Ready while no runner ever starts.
func reportRegistrationRefusal(status *v1alpha1.RunnerPoolStatus, pool *v1alpha1.RunnerPool, live []v1alpha1.Runner) {
	c := RegistrationRefusal(live)
	if c == nil {
		return
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionForgejoReachable, Status: metav1.ConditionFalse,
		Reason: c.Reason, Message: "registering runners: " + c.Message, ObservedGeneration: pool.Generation})
}

// RegistrationRefusal returns the newest refusal among the runners' Registered conditions, nil
// when no runner is refused.
func RegistrationRefusal(runners []v1alpha1.Runner) *metav1.Condition {
	var newest *metav1.Condition
	for i := range runners {
		c := meta.FindStatusCondition(runners[i].Status.Conditions, runner.ConditionRegistered)
		if c != nil && c.Status == metav1.ConditionFalse && (newest == nil || c.LastTransitionTime.After(newest.LastTransitionTime.Time)) {
			newest = c
		}
	}
	return newest
}

// unsupported names what this version of the operator cannot do for a pool yet.
func unsupported(pool *v1alpha1.RunnerPool) (reason, message string) {
	switch {
	case pool.Spec.Backend == v1alpha1.BackendRemote:
		return "BackendNotSupported", "backend: remote (VM runners) is not implemented in this version of the operator"
	case pool.Spec.Mode == v1alpha1.ModePersistent:
		return "ModeNotSupported", "mode: persistent is not implemented in this version of the operator"
	}
	return "", ""
}

// explainPollError tells a Forgejo older than 15 (which has no runner API, so answers 404)
// from a scope the token may not see: the fixes differ. It asks Forgejo's version only when a
// poll failed with 404.
func (r *Reconciler) explainPollError(ctx context.Context, fj *forgejo.Client, err error) error {
	if !errors.Is(err, forgejo.ErrNotFound) {
		return err
	}
	if _, verr := fj.CheckVersion(ctx); errors.Is(verr, forgejo.ErrForgejoTooOld) {
		return verr
	}
	return err
}
