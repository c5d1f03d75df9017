// Package vmrecord keeps the provisioner's figures and records: every VM's moments (vm.Event)
// become a line in a JSON-lines event log (internal/jsonlog, as the operator's runner event
// log), a structured log line, and Prometheus figures: boot time to the guest's init and to
// the runner, lifetime, driver errors; the host's capacity is read at each scrape.
package vmrecord

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
)

const namespace = "forgejo_runner_provisioner"

// Boot stages, each timed from the create request.
const (
	StageGuestReady    = "guest_ready"
	StageRunnerStarted = "runner_started"
)

// Durations in an event line, in seconds.
const (
	DurationGuestReady    = "guestReady"
	DurationRunnerStarted = "runnerStarted"
	DurationLifetime      = "lifetime"
	DurationRunner        = "runner"
)

// Line is one line of the event log. It carries names and ids only, never a token.
type Line struct {
	// ID is the same for the same moment of the same VM, so a retried write is written once.
	ID            string             `json:"id"`
	Time          time.Time          `json:"time"`
	VM            string             `json:"vm"`
	Event         vm.EventKind       `json:"event"`
	Driver        string             `json:"driver,omitempty"`
	Operator      string             `json:"operator,omitempty"`
	PoolNamespace string             `json:"poolNamespace,omitempty"`
	Pool          string             `json:"pool,omitempty"`
	Runner        string             `json:"runner,omitempty"`
	UUID          string             `json:"uuid,omitempty"`
	Phase         state.Phase        `json:"phase,omitempty"`
	Reason        string             `json:"reason,omitempty"`
	Message       string             `json:"message,omitempty"`
	ExitCode      *int               `json:"exitCode,omitempty"`
	Durations     map[string]float64 `json:"durations,omitempty"`
}

// LineOf is the event log's line for ev.
func LineOf(ev vm.Event) Line {
	r := ev.Record
	l := Line{
		ID: r.ID + "/" + string(ev.Kind), Time: ev.Time.UTC(), VM: r.ID, Event: ev.Kind, Driver: r.Driver,
		Operator: r.Owner.Operator, PoolNamespace: r.Owner.PoolNamespace, Pool: r.Owner.PoolName, Runner: r.Owner.RunnerName,
		UUID: r.RegistrationUUID, Phase: r.Phase, Reason: ev.Reason, Message: ev.Message,
	}
	since := func() float64 { return ev.Since().Seconds() }
	switch ev.Kind {
	case vm.EventGuestReady:
		l.Durations = map[string]float64{DurationGuestReady: since()}
	case vm.EventRunnerStarted:
		l.Durations = map[string]float64{DurationRunnerStarted: since()}
	case vm.EventRunnerExited:
		code := ev.ExitCode
		l.ExitCode = &code
		if !r.RunnerStartTime.IsZero() {
			l.Durations = map[string]float64{DurationRunner: ev.Time.Sub(r.RunnerStartTime).Seconds()}
		}
	case vm.EventDestroyed:
		l.Durations = map[string]float64{DurationLifetime: since()}
	case vm.EventDriverError:
		// A VM may meet the same operation's failure more than once.
		l.ID += "/" + ev.Reason + "/" + strconv.FormatInt(ev.Time.UnixNano(), 10)
	}
	return l
}

// Recorder turns events into the event log, log lines and figures.
type Recorder struct {
	log    logr.Logger
	events *jsonlog.Writer

	boot         *prometheus.HistogramVec
	lifetime     *prometheus.HistogramVec
	driverErrors *prometheus.CounterVec
	moments      *prometheus.CounterVec
	logErrors    prometheus.Counter
}

// Options configures a Recorder.
type Options struct {
	// EventLog is the JSON-lines file; an empty Path writes none.
	EventLog jsonlog.Options
	Logger   logr.Logger
}

// New opens the event log (when configured) and registers the figures with reg.
func New(opts Options, reg prometheus.Registerer) (*Recorder, error) {
	r := &Recorder{
		log: opts.Logger,
		boot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "vm_boot_seconds",
			Help: "Time from a VM's create request to its guest's init being up with its log stream acknowledged (stage=guest_ready) and to forgejo-runner started (stage=runner_started).",
			// KVM boots in well under a second, TCG in seconds to tens of seconds.
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120},
		}, []string{"driver", "stage"}),
		lifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "vm_lifetime_seconds",
			Help:    "Time from a VM's create request to its destruction, by why it was destroyed.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400},
		}, []string{"driver", "reason"}),
		driverErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "driver_errors_total",
			Help: "Hypervisor driver operations that failed, by operation (create, start, destroy, state, reattach).",
		}, []string{"driver", "operation"}),
		moments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vm_events_total",
			Help: "VM lifecycle events, by kind (Created, Started, GuestReady, RunnerStarted, RunnerExited, Stopped, Failed, Adopted, Destroyed).",
		}, []string{"event"}),
		logErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "event_log_write_errors_total",
			Help: "Events that could not be written to the event log.",
		}),
	}
	for _, c := range []prometheus.Collector{r.boot, r.lifetime, r.driverErrors, r.moments, r.logErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register provisioner figures: %w", err)
		}
	}
	if opts.EventLog.Path != "" {
		w, err := jsonlog.Open(opts.EventLog)
		if err != nil {
			return nil, fmt.Errorf("open event log: %w", err)
		}
		r.events = w
	}
	return r, nil
}

// Observe records one event; it is vm.Config.Events.
func (r *Recorder) Observe(ev vm.Event) {
	line := LineOf(ev)
	driverName := ev.Record.Driver
	r.moments.WithLabelValues(string(ev.Kind)).Inc()
	switch ev.Kind {
	case vm.EventGuestReady:
		r.boot.WithLabelValues(driverName, StageGuestReady).Observe(ev.Since().Seconds())
	case vm.EventRunnerStarted:
		r.boot.WithLabelValues(driverName, StageRunnerStarted).Observe(ev.Since().Seconds())
	case vm.EventDestroyed:
		r.lifetime.WithLabelValues(driverName, ev.Reason).Observe(ev.Since().Seconds())
	case vm.EventDriverError:
		r.driverErrors.WithLabelValues(driverName, ev.Reason).Inc()
	}
	kv := []any{"event", line.Event, "vm", line.VM, "pool", line.PoolNamespace + "/" + line.Pool, "runner", line.Runner}
	if line.Reason != "" {
		kv = append(kv, "reason", line.Reason)
	}
	for k, v := range line.Durations {
		kv = append(kv, k+"Seconds", v)
	}
	if ev.Kind == vm.EventDriverError || ev.Kind == vm.EventFailed {
		r.log.Info("VM event: "+line.Message, kv...)
	} else {
		r.log.V(1).Info("VM event", kv...)
	}
	if r.events == nil {
		return
	}
	data, err := json.Marshal(line)
	if err == nil {
		_, err = r.events.Append(line.ID, data)
	}
	if err != nil {
		r.logErrors.Inc()
		r.log.Error(err, "writing the event log", "event", line.Event, "vm", line.VM)
	}
}

// Close closes the event log.
func (r *Recorder) Close() error {
	if r.events == nil {
		return nil
	}
	return r.events.Close()
}

// Capacity reports a manager's capacity at each scrape.
type Capacity struct {
	VMs *vm.Manager
}

var (
	vcpusDesc = prometheus.NewDesc(namespace+"_vcpus", "vCPUs this host gives VMs (state=total) and those its live VMs hold (state=used).", []string{"state"}, nil)
	memDesc   = prometheus.NewDesc(namespace+"_memory_bytes", "Memory this host gives VMs (state=total) and what its live VMs hold (state=used).", []string{"state"}, nil)
	vmsDesc   = prometheus.NewDesc(namespace+"_vms", "VMs the provisioner keeps, by phase.", []string{"phase"}, nil)
)

// Describe implements prometheus.Collector.
func (c Capacity) Describe(ch chan<- *prometheus.Desc) {
	ch <- vcpusDesc
	ch <- memDesc
	ch <- vmsDesc
}

// Collect implements prometheus.Collector.
func (c Capacity) Collect(ch chan<- prometheus.Metric) {
	cp := c.VMs.Capacity()
	ch <- prometheus.MustNewConstMetric(vcpusDesc, prometheus.GaugeValue, float64(cp.VCPUsTotal), "total")
	ch <- prometheus.MustNewConstMetric(vcpusDesc, prometheus.GaugeValue, float64(cp.VCPUsUsed), "used")
	ch <- prometheus.MustNewConstMetric(memDesc, prometheus.GaugeValue, float64(cp.MemoryMiBTotal)*(1<<20), "total")
	ch <- prometheus.MustNewConstMetric(memDesc, prometheus.GaugeValue, float64(cp.MemoryMiBUsed)*(1<<20), "used")
	for _, p := range []state.Phase{state.PhaseCreating, state.PhaseRunning, state.PhaseStopped, state.PhaseFailed} {
		ch <- prometheus.MustNewConstMetric(vmsDesc, prometheus.GaugeValue, float64(cp.ByPhase[p]), string(p))
	}
}
