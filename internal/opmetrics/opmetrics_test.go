package opmetrics_test

import (
	"bufio"
	"context"
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhookforward"
)

// describing wraps a registry and keeps the name of every metric registered through it, even
// vectors that have no series yet and so would not show in a scrape.
type describing struct {
	*prometheus.Registry
	names []string
}

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for desc := range ch {
		if m := re.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return d.Registry.Register(c)
}

// listsNothing is a cache with nothing in it.
type listsNothing struct{ client.Reader }

func (listsNothing) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }

// TestEveryMetricIsDocumented fails when a metric is added without a row in docs/metrics.md, or
// a row documents a metric the operator does not export.
func TestEveryMetricIsDocumented(t *testing.T) {
	reg := &describing{Registry: prometheus.NewRegistry()}
	if _, err := opmetrics.New(reg, listsNothing{}); err != nil {
		t.Fatal(err)
	}
	if _, err := forgejo.NewPrometheusObserver(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.NewPrometheusObserver(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := jobwatch.NewPrometheusTimings(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := webhookforward.NewResultsCounter(reg); err != nil {
		t.Fatal(err)
	}
	registered := slices.Compact(slices.Sorted(slices.Values(reg.names)))

	f, err := os.Open("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var documented []string
	row := regexp.MustCompile("^\\| `(forgejo_runner_operator_[a-z_]+)`")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			documented = append(documented, m[1])
		}
	}
	sort.Strings(documented)
	if !slices.Equal(registered, documented) {
		t.Fatalf("registered metrics\n  %s\ndocumented in docs/metrics.md\n  %s", strings.Join(registered, "\n  "), strings.Join(documented, "\n  "))
	}
	for _, name := range registered {
		if !strings.HasPrefix(name, "forgejo_runner_operator_") {
			t.Errorf("metric %s lacks the forgejo_runner_operator_ prefix", name)
		}
	}
}

func TestPoolStatesCountRunnersByPhase(t *testing.T) {
	pool := func(ns, name string, pending int32, ready metav1.ConditionStatus) v1alpha1.RunnerPool {
		p := v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		p.Status.PendingJobs = pending
		p.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: ready}}
		return p
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	age := map[v1alpha1.RunnerPhase]time.Duration{"": 30 * time.Second, v1alpha1.RunnerBusy: time.Hour, v1alpha1.RunnerIdle: time.Hour}
	runner := func(ns, pool string, phase v1alpha1.RunnerPhase, deleting bool) v1alpha1.Runner {
		r := v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r", CreationTimestamp: metav1.NewTime(now.Add(-age[phase]))},
			Spec: v1alpha1.RunnerSpec{PoolName: pool}}
		r.Status.Phase = phase
		if deleting {
			now := metav1.Now()
			r.DeletionTimestamp = &now
		}
		return r
	}
	states := opmetrics.PoolStates(
		[]v1alpha1.RunnerPool{pool("ci", "linux", 3, metav1.ConditionTrue), pool("other", "linux", 0, metav1.ConditionFalse)},
		[]v1alpha1.Runner{
			runner("ci", "linux", v1alpha1.RunnerBusy, false), runner("ci", "linux", v1alpha1.RunnerBusy, false),
			runner("ci", "linux", "", false), runner("ci", "linux", v1alpha1.RunnerIdle, true),
			runner("other", "linux", v1alpha1.RunnerIdle, false),
			runner("ci", "gone", v1alpha1.RunnerIdle, false), // its pool is gone: no series
		}, now)
	if len(states) != 2 {
		t.Fatalf("states %+v", states)
	}
	ci, other := states[0], states[1]
	if ci.Runners[v1alpha1.RunnerBusy] != 2 || ci.Runners[v1alpha1.RunnerPending] != 1 || ci.Runners[v1alpha1.RunnerDeregistering] != 1 ||
		ci.Runners[v1alpha1.RunnerIdle] != 0 || ci.PendingJobs != 3 || !ci.Ready || ci.OldestUnstarted != 30*time.Second {
		t.Errorf("ci/linux %+v", ci)
	}
	if other.Runners[v1alpha1.RunnerIdle] != 1 || other.Ready || other.OldestUnstarted != 0 {
		t.Errorf("other/linux %+v", other)
	}
}

func TestRetiredRunnersAreCountedByOutcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := opmetrics.New(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveRetired("ci", "linux", v1alpha1.OutcomeSucceeded, 0)
	m.ObserveRetired("ci", "linux", v1alpha1.OutcomeSucceeded, 0)
	m.ObserveRetired("ci", "linux", v1alpha1.OutcomeFailed, 0)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != opmetrics.Outcomes {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"namespace=ci,outcome=Failed,pool=linux": 1, "namespace=ci,outcome=Succeeded,pool=linux": 2}
	if !maps.Equal(got, want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
}

// failingCache cannot list: the scrape reports the error rather than stale or empty numbers.
type failingCache struct{ client.Reader }

func (failingCache) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not started")
}

func TestGaugesReportACacheFailure(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := opmetrics.New(reg, failingCache{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "cache not started") {
		t.Fatalf("gather error %v, want the cache's", err)
	}
}

func TestAPoolsCountersStartAtZeroAndGoWithIt(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := opmetrics.New(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	series := func() int {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range families {
			for _, metric := range f.GetMetric() {
				for _, l := range metric.GetLabel() {
					if l.GetName() == "pool" && l.GetValue() == "linux" {
						n++
					}
				}
			}
		}
		return n
	}
	m.PoolSeen("ci", "linux")
	if got, want := series(), len(opmetrics.AllOutcomes)+1+len(opmetrics.AbandonReasons); got != want {
		t.Fatalf("%d series for a new pool, want %d (every outcome, the orphans and every abandon reason at 0)", got, want)
	}
	m.ObserveRetired("ci", "linux", v1alpha1.OutcomeFailed, time.Minute)
	m.PoolGone("ci", "linux")
	if got := series(); got != 0 {
		t.Fatalf("%d series left after the pool is gone", got)
	}
}

// A pool's last runners are the ones most likely let go at their deadline, just before the pool
// goes: the increase must outlive the pool, or no alert would ever see it.
func TestAbandonedDeregistrationsOutliveTheirPool(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := opmetrics.New(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.PoolSeen("ci", "linux")
	m.DeregistrationAbandoned("ci", "linux", opmetrics.AbandonedTokenUnavailable)
	m.PoolGone("ci", "linux")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != opmetrics.DeregistrationsAbandoned {
			continue
		}
		for _, metric := range f.GetMetric() {
			var labels []string
			for _, l := range metric.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = metric.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"namespace=ci,pool=linux,reason=ForgejoError": 0, "namespace=ci,pool=linux,reason=PoolGone": 0,
		"namespace=ci,pool=linux,reason=TokenUnavailable": 1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("abandoned deregistrations after the pool is gone %v, want %v", got, want)
	}
}

func TestAuditHeadOnlyMovesForward(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := opmetrics.New(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	head := func() float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == opmetrics.AuditLogRecords {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no audit head gauge")
		return 0
	}
	m.SetAuditHead(7)
	m.SetAuditHead(5) // a writer that finished after a later one
	if got := head(); got != 7 {
		t.Fatalf("audit head %v, want 7", got)
	}
}
