// Package opmetrics holds the operator's own Prometheus metrics about runners and pools: the
// durations a runner's life is made of, how runners end, and gauges read from the cache at
// scrape time. The Forgejo client, the webhook receiver and the jobs watcher register their
// metrics themselves; docs/metrics.md documents them all.
package opmetrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
)

// Metric names.
const (
	RegistrationDuration     = "forgejo_runner_operator_runner_registration_duration_seconds"
	StartupDuration          = "forgejo_runner_operator_runner_startup_duration_seconds"
	Lifetime                 = "forgejo_runner_operator_runner_lifetime_seconds"
	Outcomes                 = "forgejo_runner_operator_runner_outcomes_total"
	OrphansCollected         = "forgejo_runner_operator_orphaned_registrations_collected_total"
	DeregistrationsAbandoned = "forgejo_runner_operator_deregistrations_abandoned_total"
	RecordWriteErrors        = "forgejo_runner_operator_record_write_errors_total"
	AuditLogRecords          = "forgejo_runner_operator_audit_log_records"
	Runners                  = "forgejo_runner_operator_runners"
	PendingJobs              = "forgejo_runner_operator_pending_jobs"
	PoolReady                = "forgejo_runner_operator_pool_ready"
	OldestUnstarted          = "forgejo_runner_operator_runner_oldest_unstarted_seconds"
)

// DurationBuckets suit CI work: from a tenth of a second (a registration, a warm start) to four
// hours (a long build), in 16 exponential steps.
var DurationBuckets = prometheus.ExponentialBucketsRange(0.1, 4*3600, 16)

// AllOutcomes are the ways a runner ends, each counted from zero for every pool.
var AllOutcomes = []v1alpha1.RunnerOutcome{
	v1alpha1.OutcomeSucceeded, v1alpha1.OutcomeFailed, v1alpha1.OutcomeNoJob, v1alpha1.OutcomeError, v1alpha1.OutcomeDeleted,
}

// Why a Runner's deregistration was given up at its deadline: the values of the reason label of
// DeregistrationsAbandoned.
const (
	// AbandonedTokenUnavailable: the pool's token Secret could not be read (deleted with its
	// namespace, say) and no token was remembered.
	AbandonedTokenUnavailable = "TokenUnavailable"
	// AbandonedPoolGone: the Runner's RunnerPool no longer exists.
	AbandonedPoolGone = "PoolGone"
	// AbandonedForgejoError: Forgejo refused or failed every attempt.
	AbandonedForgejoError = "ForgejoError"
)

// AbandonReasons are every value of the reason label, each counted from zero for every pool.
var AbandonReasons = []string{AbandonedTokenUnavailable, AbandonedPoolGone, AbandonedForgejoError}

// Phases are the runner phases the runners gauge reports, each pool showing every one (0 when
// empty), so a query over a phase never finds nothing.
var Phases = []v1alpha1.RunnerPhase{
	v1alpha1.RunnerPending, v1alpha1.RunnerRegistered, v1alpha1.RunnerStarting, v1alpha1.RunnerIdle,
	v1alpha1.RunnerBusy, v1alpha1.RunnerFinished, v1alpha1.RunnerFailed, v1alpha1.RunnerDeregistering,
}

// Metrics are the operator's runner and pool metrics. Labels are the pool's namespace and name
// and bounded enums only: never a job id, a runner name or anything secret.
type Metrics struct {
	registration *prometheus.HistogramVec
	startup      *prometheus.HistogramVec
	lifetime     *prometheus.HistogramVec
	outcomes     *prometheus.CounterVec
	orphans      *prometheus.CounterVec
	abandoned    *prometheus.CounterVec
	writeErrors  *prometheus.CounterVec
	auditRecords prometheus.Gauge

	auditMu   sync.Mutex
	auditHead uint64
	// abandonedIn holds the pools ([2]string{namespace, pool}) with an abandoned deregistration
	// counted: their series outlive the pool.
	abandonedIn sync.Map
}

// New registers the metrics on reg. cache is what the gauges of runners and pools are read from
// at scrape time, so they never go stale; nil leaves them out.
func New(reg prometheus.Registerer, cache client.Reader) (*Metrics, error) {
	pool := []string{"namespace", "pool"}
	m := &Metrics{
		registration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    RegistrationDuration,
			Help:    "Time to register a runner with Forgejo and store its token Secret.",
			Buckets: DurationBuckets,
		}, pool),
		startup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    StartupDuration,
			Help:    "Time from a runner's pod being created to its runner container running.",
			Buckets: DurationBuckets,
		}, pool),
		lifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    Lifetime,
			Help:    "Time from a Runner being created to it being retired.",
			Buckets: DurationBuckets,
		}, pool),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: Outcomes,
			Help: "Retired runners by outcome (Succeeded, Failed, NoJob, Error, Deleted).",
		}, []string{"namespace", "pool", "outcome"}),
		orphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: OrphansCollected,
			Help: "Registrations with the pool's marker but no Runner, deleted by garbage collection.",
		}, pool),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: DeregistrationsAbandoned,
			Help: "Runners let go at their deregistration deadline with their Forgejo registration possibly left behind, by reason (TokenUnavailable, PoolGone, ForgejoError).",
		}, []string{"namespace", "pool", "reason"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RecordWriteErrors,
			Help: "Failed appends to the lifecycle event log (log=events) or the audit log (log=audit).",
		}, []string{"log"}),
		auditRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: AuditLogRecords,
			Help: "Sequence number of the last record written to the audit log.",
		}),
	}
	for _, log := range []string{"events", "audit"} {
		m.writeErrors.WithLabelValues(log)
	}
	var err error
	for _, h := range []**prometheus.HistogramVec{&m.registration, &m.startup, &m.lifetime} {
		if *h, err = promreg.Register(reg, *h); err != nil {
			return nil, err
		}
	}
	for _, c := range []**prometheus.CounterVec{&m.outcomes, &m.orphans, &m.abandoned, &m.writeErrors} {
		if *c, err = promreg.Register(reg, *c); err != nil {
			return nil, err
		}
	}
	if m.auditRecords, err = promreg.Register(reg, m.auditRecords); err != nil {
		return nil, err
	}
	if cache != nil {
		// Unlike the counters, the gauges must read the new operator's cache.
		state := &stateCollector{cache: cache}
		if err := reg.Register(state); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, fmt.Errorf("register runner gauges: %w", err)
			}
			reg.Unregister(already.ExistingCollector)
			if err := reg.Register(state); err != nil {
				return nil, fmt.Errorf("register runner gauges: %w", err)
			}
		}
	}
	return m, nil
}

// ObserveRegistration records how long registering a runner of the pool took.
func (m *Metrics) ObserveRegistration(namespace, pool string, d time.Duration) {
	m.registration.WithLabelValues(namespace, pool).Observe(d.Seconds())
}

// ObserveStartup records how long a runner of the pool took from pod created to running.
func (m *Metrics) ObserveStartup(namespace, pool string, d time.Duration) {
	m.startup.WithLabelValues(namespace, pool).Observe(d.Seconds())
}

// ObserveRetired records a retired runner's lifetime and outcome.
func (m *Metrics) ObserveRetired(namespace, pool string, outcome v1alpha1.RunnerOutcome, lifetime time.Duration) {
	m.lifetime.WithLabelValues(namespace, pool).Observe(lifetime.Seconds())
	m.outcomes.WithLabelValues(namespace, pool, string(outcome)).Inc()
}

// PoolSeen starts the pool's counters at zero, so that the first runner to fail or the first
// orphan collected is an increase a rate() or increase() can see.
func (m *Metrics) PoolSeen(namespace, pool string) {
	for _, outcome := range AllOutcomes {
		m.outcomes.WithLabelValues(namespace, pool, string(outcome))
	}
	m.orphans.WithLabelValues(namespace, pool)
	for _, reason := range AbandonReasons {
		m.abandoned.WithLabelValues(namespace, pool, reason)
	}
}

// PoolGone drops a deleted pool's series, but for the abandoned deregistrations: a pool's
// last runners are often the ones let go, just before the pool goes, and the increase must stay
// for Prometheus to see.
func (m *Metrics) PoolGone(namespace, pool string) {
	labels := prometheus.Labels{"namespace": namespace, "pool": pool}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{m.registration, m.startup, m.lifetime, m.outcomes, m.orphans} {
		v.DeletePartialMatch(labels)
	}
	if _, counted := m.abandonedIn.Load([2]string{namespace, pool}); !counted {
		m.abandoned.DeletePartialMatch(labels)
	}
}

// OrphanCollected counts one orphaned registration deleted for the pool.
func (m *Metrics) OrphanCollected(namespace, pool string) {
	m.orphans.WithLabelValues(namespace, pool).Inc()
}

// DeregistrationAbandoned counts a Runner of the pool let go at its deregistration deadline, for
// one of AbandonReasons.
func (m *Metrics) DeregistrationAbandoned(namespace, pool, reason string) {
	if m == nil {
		return
	}
	m.abandonedIn.Store([2]string{namespace, pool}, true)
	m.abandoned.WithLabelValues(namespace, pool, reason).Inc()
}

// RecordWriteFailed counts a failed append to the "events" or "audit" log.
func (m *Metrics) RecordWriteFailed(log string) {
	m.writeErrors.WithLabelValues(log).Inc()
}

// SetAuditHead publishes the audit log's last sequence number. Writers report it as they
// finish, in any order; the gauge only moves forward, as the log does.
func (m *Metrics) SetAuditHead(seq uint64) {
	m.auditMu.Lock()
	defer m.auditMu.Unlock()
	if seq > m.auditHead {
		m.auditHead = seq
		m.auditRecords.Set(float64(seq))
	}
}

// stateCollector reports live runners by phase, pending jobs and readiness for every pool, read
// from the informer cache when Prometheus scrapes.
type stateCollector struct {
	cache client.Reader
}

var (
	runnersDesc = prometheus.NewDesc(Runners, "Live Runners by pool and phase.", []string{"namespace", "pool", "phase"}, nil)
	pendingDesc = prometheus.NewDesc(PendingJobs, "Waiting jobs matched to the pool (status.pendingJobs).", []string{"namespace", "pool"}, nil)
	readyDesc   = prometheus.NewDesc(PoolReady, "1 when the pool's Ready condition is True, else 0.", []string{"namespace", "pool"}, nil)
	oldestDesc  = prometheus.NewDesc(OldestUnstarted, "Age of the pool's oldest live runner not started yet (Pending, Registered or Starting); 0 when none.", []string{"namespace", "pool"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runnersDesc
	ch <- pendingDesc
	ch <- readyDesc
	ch <- oldestDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var pools v1alpha1.RunnerPoolList
	var runners v1alpha1.RunnerList
	if err := c.cache.List(ctx, &pools); err != nil {
		ch <- prometheus.NewInvalidMetric(runnersDesc, fmt.Errorf("list pools: %w", err))
		return
	}
	if err := c.cache.List(ctx, &runners); err != nil {
		ch <- prometheus.NewInvalidMetric(runnersDesc, fmt.Errorf("list runners: %w", err))
		return
	}
	for _, s := range PoolStates(pools.Items, runners.Items, time.Now()) {
		for _, phase := range Phases {
			ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, float64(s.Runners[phase]), s.Namespace, s.Pool, string(phase))
		}
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(s.PendingJobs), s.Namespace, s.Pool)
		ready := 0.0
		if s.Ready {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready, s.Namespace, s.Pool)
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, s.OldestUnstarted.Seconds(), s.Namespace, s.Pool)
	}
}

// PoolState is what the gauges say about one pool.
type PoolState struct {
	Namespace, Pool string
	Runners         map[v1alpha1.RunnerPhase]int
	PendingJobs     int32
	Ready           bool
	// OldestUnstarted is how long the oldest live runner has waited to start: a runner whose
	// pod cannot be scheduled or pulled stays here, and this is what shows it.
	OldestUnstarted time.Duration
}

// PoolStates counts runners by phase for each pool, as of now. A Runner without a phase yet
// counts as Pending; Runners of pools that no longer exist are left out, as their pool label
// would be.
func PoolStates(pools []v1alpha1.RunnerPool, runners []v1alpha1.Runner, now time.Time) []PoolState {
	index := map[[2]string]int{}
	states := make([]PoolState, 0, len(pools))
	for _, p := range pools {
		index[[2]string{p.Namespace, p.Name}] = len(states)
		states = append(states, PoolState{
			Namespace: p.Namespace, Pool: p.Name, Runners: map[v1alpha1.RunnerPhase]int{},
			PendingJobs: p.Status.PendingJobs,
			Ready:       meta.IsStatusConditionPresentAndEqual(p.Status.Conditions, "Ready", metav1.ConditionTrue),
		})
	}
	for _, rn := range runners {
		i, ok := index[[2]string{rn.Namespace, rn.Spec.PoolName}]
		if !ok {
			continue
		}
		phase := rn.Status.Phase
		if phase == "" {
			phase = v1alpha1.RunnerPending
		}
		if !rn.DeletionTimestamp.IsZero() {
			phase = v1alpha1.RunnerDeregistering
		}
		states[i].Runners[phase]++
		switch phase {
		case v1alpha1.RunnerPending, v1alpha1.RunnerRegistered, v1alpha1.RunnerStarting:
			states[i].OldestUnstarted = max(states[i].OldestUnstarted, now.Sub(rn.CreationTimestamp.Time))
		}
	}
	return states
}
