// Package operator wires the controllers, the jobs watcher and the Forgejo client factory into
// a controller-runtime manager. The binary and the end-to-end tests both use it, so the tests
// run the operator exactly as it ships.
package operator

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhookforward"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhookpools"
)

// Options tune the operator.
type Options struct {
	// PollInterval is how often each Forgejo connection's jobs are listed.
	PollInterval time.Duration
	// Resync is how often a pool is reconciled when nothing changed.
	Resync time.Duration
	// JobGoneGrace is how long a runner may outlive its job's leaving the jobs list.
	JobGoneGrace time.Duration
	// GCInterval is how often registrations are checked for orphans.
	GCInterval time.Duration
	// DeregisterDeadline is how long a Runner being deleted waits, from its deletion, for its
	// registration to be confirmed gone before it goes without (default
	// runner.DefaultDeregisterDeadline).
	DeregisterDeadline time.Duration
	// WebhookAddr is where the webhook receiver listens (path WebhookPath); empty for none.
	WebhookAddr string
	// WebhookSharedSecret, when set, is the operator-wide secret: a delivery it verifies acts
	// on every pool covering its repository, whatever the pools' own secrets.
	WebhookSharedSecret []byte
	// EventLog is the runner lifecycle event log file; an empty Path writes none.
	EventLog jsonlog.Options
	// AuditLogPath is the audit log file; empty writes none.
	AuditLogPath string
	// Identity names the operator in the audit log; empty asks the API server who the
	// operator is (a SelfSubjectReview) and adds the host name.
	Identity string
	// AllowPrivilegedDinD lets pools in every namespace run Privileged DinD; without it only
	// namespaces labelled v1alpha1.AllowPrivilegedDinDLabel=true may.
	AllowPrivilegedDinD bool
	// LeaderLease and LeaderIdentity, set when replicas elect a leader, let a replica that does
	// not lead forward the deliveries it verifies to the leader (see webhookforward): every
	// replica is ready and receives webhooks. LeaderIdentity is this replica's identity in
	// the Lease (webhookforward.Identity).
	LeaderLease    types.NamespacedName
	LeaderIdentity string
}

// WebhookPath is the path Forgejo's Actions job webhooks are to be sent to.
const WebhookPath = "/webhook/forgejo"

// CacheOptions limit the manager's cache of pods and Secrets to the operator's own: without
// them, reading one runner Secret through the cache would cache every Secret of the cluster in
// the operator's memory. Pools' API tokens are read uncached (see poolconn.Factory).
//
// The managed fields of pods, Secrets and Runners are dropped from the cache: nothing reads them,
// and they are a large part of each object, of which there are several per runner. A pool's are
// kept: its audit records name who changed its spec from them.
func CacheOptions() cache.Options {
	own := labels.SelectorFromSet(labels.Set{runnerpod.LabelManagedBy: runnerpod.ManagedBy})
	strip := cache.TransformStripManagedFields()
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:      {Label: own, Transform: strip},
		&corev1.Secret{}:   {Label: own, Transform: strip},
		&v1alpha1.Runner{}: {Transform: strip},
	}}
}

// Setup adds the operator's controllers and runnables to mgr.
func Setup(mgr ctrl.Manager, opts Options) error {
	observer, err := forgejo.NewPrometheusObserver(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register Forgejo API metrics: %w", err)
	}
	factory := &poolconn.Factory{
		// Token Secrets are read from the API server, not through the manager's cache (which
		// would hold every Secret of the cluster in the operator's memory), and each token is
		// reused for poolconn.DefaultTokenTTL.
		Reader:     mgr.GetAPIReader(),
		HTTPClient: &http.Client{Transport: http.DefaultTransport},
		Observer:   observer,
	}
	runnerMetrics, err := opmetrics.New(metrics.Registry, mgr.GetCache())
	if err != nil {
		return err
	}
	identity := opts.Identity
	if identity == "" {
		identity = Identity(context.Background(), mgr.GetConfig())
	}
	recorder := mgr.GetEventRecorder("forgejo-runner-operator")
	records := journal.New(journal.Options{
		EventLog:     opts.EventLog,
		AuditLogPath: opts.AuditLogPath,
		Identity:     identity,
		Kube:         recorder,
		Metrics:      runnerMetrics,
		Log:          ctrl.Log.WithName("journal"),
	})
	if err := mgr.Add(records); err != nil {
		return fmt.Errorf("add journal: %w", err)
	}
	// Both controllers remember each pool's last client, to deregister with once a deleted
	// namespace's token Secret is gone.
	clients := &runner.ClientMemory{}
	pools := &runnerpool.Reconciler{
		Client:   mgr.GetClient(),
		Forgejo:  factory,
		Events:   make(chan event.TypedGenericEvent[*v1alpha1.RunnerPool], 1024),
		Resync:   opts.Resync,
		Journal:  records,
		Metrics:  runnerMetrics,
		Recorder: recorder,
		Clients:  clients,

		JobGoneGrace: opts.JobGoneGrace,
		GCInterval:   opts.GCInterval,
		// Namespaces are read uncached, one at a time, and only for pools that ask for
		// privilege: get on the pools' namespaces is all the operator needs.
		Privilege: runnerpool.PrivilegeGate{AllowAll: opts.AllowPrivilegedDinD, Namespaces: mgr.GetAPIReader()},
	}
	pools.Watcher = jobwatch.New(opts.PollInterval, pools.Notify, ctrl.Log.WithName("jobwatch"))
	timings, err := jobwatch.NewPrometheusTimings(metrics.Registry)
	if err != nil {
		return err
	}
	pools.Watcher.SetTimings(timings)
	pools.Watcher.SetHeldSource(heldJobs(mgr.GetClient()))
	if err := mgr.Add(pools.Watcher); err != nil {
		return fmt.Errorf("add jobs watcher: %w", err)
	}
	if err := pools.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up RunnerPool controller: %w", err)
	}
	runners := &runner.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Forgejo: factory, Jobs: pools.Watcher, Journal: records,
		DeregisterDeadline: opts.DeregisterDeadline, Recorder: recorder, Metrics: runnerMetrics, Clients: clients}
	if err := runners.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up Runner controller: %w", err)
	}
	if opts.WebhookAddr != "" {
		return setupWebhook(mgr, opts, pools.Watcher)
	}
	return nil
}

// setupWebhook serves the webhook receiver on every replica, so that readiness does not depend
// on leadership and a rolling update of two replicas finishes. Only the leader's jobs watcher
// polls, so a replica that does not lead sends each delivery it verified on to the leader
// (webhookforward explains why this design); one it cannot forward is repaired by the next poll.
func setupWebhook(mgr ctrl.Manager, opts Options, watcher *jobwatch.Watcher) error {
	observer, err := webhook.NewPrometheusObserver(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register webhook metrics: %w", err)
	}
	log := ctrl.Log.WithName("webhook")
	var sink webhook.EventSink = &webhookpools.Sink{Pools: mgr.GetClient(), Watcher: watcher, Log: log}
	var forwarder *webhookforward.Forwarder
	if opts.LeaderLease.Name != "" {
		results, err := webhookforward.NewResultsCounter(metrics.Registry)
		if err != nil {
			return err
		}
		forwarder = &webhookforward.Forwarder{
			Local: sink, Elected: mgr.Elected(), Leases: mgr.GetAPIReader(), Lease: opts.LeaderLease,
			Self: opts.LeaderIdentity, Path: WebhookPath, Log: log.WithName("forward"), Results: results,
		}
		sink = forwarder
	}
	handler, err := webhook.New(webhook.Options{
		Secrets: &webhookpools.Secrets{
			Pools: mgr.GetClient(), SecretReader: mgr.GetAPIReader(), Shared: opts.WebhookSharedSecret, Log: log,
		},
		Sink:     sink,
		Observer: observer,
		Log:      log,
	})
	if err != nil {
		return fmt.Errorf("build webhook receiver: %w", err)
	}
	mux := http.NewServeMux()
	if forwarder != nil {
		mux.Handle(WebhookPath, forwarder.Wrap(handler))
	} else {
		mux.Handle(WebhookPath, handler)
	}
	server := webhook.NewServer(opts.WebhookAddr, mux, webhook.ServerLimits{})
	if err := mgr.Add(everyReplica(func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- server.ListenAndServe() }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve webhooks on %s: %w", opts.WebhookAddr, err)
		case <-ctx.Done():
		}
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return server.Shutdown(shutdown)
	})); err != nil {
		return fmt.Errorf("add webhook receiver: %w", err)
	}
	return nil
}

// Identity is who the operator is to the API server, as a SelfSubjectReview tells it, and on
// which host it runs: the actor the audit log names. When the API server does not say, the
// host name alone stands.
func Identity(ctx context.Context, cfg *rest.Config) string {
	host, _ := os.Hostname()
	user := ""
	if cs, err := kubernetes.NewForConfig(cfg); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil {
			user = review.Status.UserInfo.Username
		}
	}
	switch {
	case user == "":
		return "forgejo-runner-operator on " + host
	case host == "":
		return user
	}
	return user + " on " + host
}

// heldJobs reads, from the Runners in the manager's cache, which pool holds each job: after a
// restart or a leader change, the dispatcher keeps every job with the pool that made its Runner.
func heldJobs(c client.Reader) jobwatch.HeldSource {
	return func(ctx context.Context) (map[string]types.NamespacedName, error) {
		var runners v1alpha1.RunnerList
		if err := c.List(ctx, &runners); err != nil {
			return nil, fmt.Errorf("list runners: %w", err)
		}
		held := make(map[string]types.NamespacedName, len(runners.Items))
		for _, rn := range runners.Items {
			if rn.Spec.Job != nil && rn.Spec.Job.Handle != "" {
				held[rn.Spec.Job.Handle] = types.NamespacedName{Namespace: rn.Namespace, Name: rn.Spec.PoolName}
			}
		}
		return held, nil
	}
}

// everyReplica is a runnable that runs whether or not its replica leads.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (f everyReplica) NeedLeaderElection() bool        { return false }
