package journal

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// KubeRecorder sends Kubernetes Events (events.k8s.io/v1); the manager's GetEventRecorder
// gives one.
type KubeRecorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...interface{})
}

// Limits on Kubernetes Events. A burst of a thousand jobs must not become thousands of Event
// objects in etcd: each runner's own events share a budget, and the pool hears of its runners
// in one summary per reason and window, whose counts are complete even when the budget dropped
// runners' own events.
const (
	// KubeWindow is how often a pool's summaries are sent.
	KubeWindow = 10 * time.Second
	// RunnerEventsPerSecond and RunnerEventsBurst bound the events sent on Runners.
	RunnerEventsPerSecond = 5
	RunnerEventsBurst     = 50
	// summaryNames is how many runners a summary names.
	summaryNames = 5
)

type kubeEvents struct {
	rec    KubeRecorder
	now    func() time.Time
	bucket tokenBucket

	mu      sync.Mutex
	pending map[summaryKey]*summary
}

type summaryKey struct {
	namespace, pool, reason string
}

type summary struct {
	poolUID types.UID
	// first is the first runner summarised: the event's related object. The events API folds
	// events that differ only in their note into one series, keeping the first note; a
	// related object of its own keeps each summary whole.
	first   *v1alpha1.Runner
	warning bool
	total   int
	counts  map[string]int // by the runners' reason or outcome
	names   []string
}

func newKubeEvents(rec KubeRecorder, now func() time.Time) *kubeEvents {
	return &kubeEvents{
		rec: rec, now: now, pending: map[summaryKey]*summary{},
		bucket: tokenBucket{rate: RunnerEventsPerSecond, burst: RunnerEventsBurst, tokens: RunnerEventsBurst, last: now()},
	}
}

// runner sends the transition as an event on the Runner, budget permitting, and adds it to the
// pool's summary when it is one a pool's user follows: runners created, ended and deleted.
func (k *kubeEvents) runner(rn *v1alpha1.Runner, ev Event) {
	eventType := corev1.EventTypeNormal
	if ev.To == string(v1alpha1.RunnerFailed) {
		eventType = corev1.EventTypeWarning
	}
	if rn != nil && k.bucket.take(k.now()) {
		k.rec.Eventf(rn, nil, eventType, ev.To, ev.Reason, "%s", runnerNote(ev))
	}
	reason, detail := "", ""
	switch ev.To {
	case string(v1alpha1.RunnerPending):
		reason, detail = "RunnersCreated", ev.Reason
	case string(v1alpha1.RunnerFinished), string(v1alpha1.RunnerFailed):
		reason, detail = "RunnersEnded", ev.Outcome
	case PhaseDeleted:
		reason, detail = "RunnersDeleted", ev.Reason
	default:
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key := summaryKey{ev.Namespace, ev.Pool, reason}
	s := k.pending[key]
	if s == nil {
		s = &summary{counts: map[string]int{}}
		k.pending[key] = s
	}
	if rn != nil {
		if owner := metav1.GetControllerOf(rn); owner != nil {
			s.poolUID = owner.UID
		}
	}
	if s.first == nil {
		s.first = &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: ev.Namespace, Name: ev.Runner, UID: ev.RunnerUID}}
	}
	s.total++
	s.counts[detail]++
	s.warning = s.warning || eventType == corev1.EventTypeWarning
	if len(s.names) < summaryNames {
		s.names = append(s.names, ev.Runner)
	}
}

func runnerNote(ev Event) string {
	var b strings.Builder
	from := ev.From
	if from == "" {
		from = "new"
	}
	fmt.Fprintf(&b, "%s -> %s (%s)", from, ev.To, ev.Reason)
	if ev.JobID != 0 {
		fmt.Fprintf(&b, ", job %d", ev.JobID)
	}
	if ev.Outcome != "" && (ev.To == string(v1alpha1.RunnerFinished) || ev.To == string(v1alpha1.RunnerFailed) || ev.To == PhaseDeleted) {
		fmt.Fprintf(&b, ", outcome %s", ev.Outcome)
	}
	names := make([]string, 0, len(ev.Durations))
	for name := range ev.Durations {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&b, ", %s %.1fs", name, ev.Durations[name])
	}
	if ev.Message != "" {
		b.WriteString(": " + ev.Message)
	}
	return b.String()
}

// run sends the summaries every KubeWindow until ctx ends, and the last ones then.
func (k *kubeEvents) run(ctx context.Context) {
	tick := time.NewTicker(KubeWindow)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			k.flush()
			return
		case <-tick.C:
			k.flush()
		}
	}
}

func (k *kubeEvents) flush() {
	k.mu.Lock()
	pending := k.pending
	k.pending = map[summaryKey]*summary{}
	k.mu.Unlock()
	for key, s := range pending {
		pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Namespace: key.namespace, Name: key.pool, UID: s.poolUID}}
		eventType := corev1.EventTypeNormal
		if s.warning {
			eventType = corev1.EventTypeWarning
		}
		k.rec.Eventf(pool, s.first, eventType, key.reason, "Summarize", "%s", summaryNote(key.reason, s))
	}
}

// summaryNote reads e.g. "3 runners ended: 2 Succeeded, 1 Failed (build-1a2b3c, ...)".
func summaryNote(reason string, s *summary) string {
	verb := map[string]string{"RunnersCreated": "created", "RunnersEnded": "ended", "RunnersDeleted": "deleted"}[reason]
	noun := "runners"
	if s.total == 1 {
		noun = "runner"
	}
	details := make([]string, 0, len(s.counts))
	for d, n := range s.counts {
		details = append(details, fmt.Sprintf("%d %s", n, d))
	}
	sort.Strings(details)
	names := strings.Join(s.names, ", ")
	if more := s.total - len(s.names); more > 0 {
		names += fmt.Sprintf(" and %d more", more)
	}
	return fmt.Sprintf("%d %s %s: %s (%s)", s.total, noun, verb, strings.Join(details, ", "), names)
}

// tokenBucket allows rate events a second on average and burst at once.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
