// Package operator wires the controllers, the jobs watcher and the Forgejo client factory into
// a controller-runtime manager. The binary and the end-to-end tests both use it, so the tests
// run the operator exactly as it ships.
package operator

import (
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
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
}

// CacheOptions limit the manager's cache of pods and Secrets to the operator's own: without
// them, reading one runner Secret through the cache would cache every Secret of the cluster in
// the operator's memory. Pools' API tokens are read uncached (see poolconn.Factory).
func CacheOptions() cache.Options {
	own := labels.SelectorFromSet(labels.Set{runnerpod.LabelManagedBy: runnerpod.ManagedBy})
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:    {Label: own},
		&corev1.Secret{}: {Label: own},
	}}
}

// Setup adds the operator's controllers and runnables to mgr.
func Setup(mgr ctrl.Manager, opts Options) error {
	observer, err := forgejo.NewPrometheusObserver(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register Forgejo API metrics: %w", err)
	}
	factory := &poolconn.Factory{
		// Token Secrets are read when needed rather than cached: a cache would hold every
		// Secret of the cluster in the operator's memory.
		Reader:     mgr.GetAPIReader(),
		HTTPClient: &http.Client{Transport: http.DefaultTransport},
		Observer:   observer,
	}
	pools := &runnerpool.Reconciler{
		Client:  mgr.GetClient(),
		Forgejo: factory,
		Events:  make(chan event.TypedGenericEvent[*v1alpha1.RunnerPool], 1024),
		Resync:  opts.Resync,

		JobGoneGrace: opts.JobGoneGrace,
		GCInterval:   opts.GCInterval,
	}
	pools.Watcher = jobwatch.New(opts.PollInterval, pools.Notify, ctrl.Log.WithName("jobwatch"))
	if err := mgr.Add(pools.Watcher); err != nil {
		return fmt.Errorf("add jobs watcher: %w", err)
	}
	if err := pools.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up RunnerPool controller: %w", err)
	}
	runners := &runner.Reconciler{Client: mgr.GetClient(), Forgejo: factory}
	if err := runners.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up Runner controller: %w", err)
	}
	return nil
}
