package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// results are the figures of one burst; JSON with -json.
type results struct {
	// Path is how the jobs reached the operator: pathPoll or pathWebhook.
	Path         string  `json:"path"`
	Complete     bool    `json:"complete"`
	Jobs         int     `json:"jobs"`
	Succeeded    int     `json:"succeeded"`
	Failed       int     `json:"failed"`
	PollInterval string  `json:"poll_interval"`
	TaskDuration string  `json:"task_duration"`
	Nodes        int     `json:"nodes"`
	MaxRunners   int     `json:"max_runners"`
	CPUs         int     `json:"cpus"`
	QueuedAfter  float64 `json:"queued_after_poll_ms"`
	// KubeClient is how the operator got its kubeconfig, which decides its client-side rate limit.
	KubeClient string `json:"kube_client"`

	Phases []phase `json:"phases"`

	// Seconds from the first job queued to the last one done, and jobs per second over it.
	BurstSeconds  float64 `json:"burst_s"`
	JobsPerSecond float64 `json:"jobs_per_s"`
	// Seconds from the last job done until no Runner, pod, Secret or registration is left.
	CleanupSeconds float64 `json:"cleanup_s,omitempty"`

	API      apiFigures      `json:"forgejo_api"`
	Operator operatorFigures `json:"operator"`
	Pods     podFigures      `json:"pods"`
}

type phase struct {
	Name  string  `json:"name"`
	Count int     `json:"n"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// apiFigures are the requests to Forgejo from the moment the jobs were queued to the end.
type apiFigures struct {
	REST               int            `json:"rest"`
	OperatorREST       int            `json:"operator_rest"`
	RunnerProtocol     int            `json:"runner_protocol"`
	Failed             int            `json:"failed"`
	JobsPolls          int            `json:"jobs_polls"`
	OperatorRESTPerJob float64        `json:"operator_rest_per_job"`
	RunnerPerJob       float64        `json:"runner_protocol_per_job"`
	Endpoints          map[string]int `json:"endpoints"`
}

type operatorFigures struct {
	// CPU seconds (user + system) while the burst ran, and over the operator's whole life.
	CPUBurstSeconds float64 `json:"cpu_burst_s"`
	CPUTotalSeconds float64 `json:"cpu_total_s"`
	// CPU milliseconds per job over the burst.
	CPUPerJobMS float64 `json:"cpu_per_job_ms"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	RSSMiB      float64 `json:"rss_end_mib"`
}

type podFigures struct {
	Created        int      `json:"created"`
	PeakLive       int      `json:"peak_live"`
	JobsWithTwo    int      `json:"jobs_with_more_than_one_pod"`
	WithoutJob     int      `json:"pods_without_a_queued_job"`
	TasksOverOne   int      `json:"jobs_run_more_than_once"`
	ArgParseErrors []string `json:"arg_parse_errors,omitempty"`
}

func (b *burst) results(path string, queuedAfter time.Duration) (*results, error) {
	state := b.sim.State()
	jobs := map[int64]forgejosim.Job{}
	for _, j := range state.Jobs {
		jobs[j.ID] = j
	}
	tasks := map[int64]int{}
	for _, t := range state.Tasks {
		tasks[t.JobID]++
	}
	byHandle, podCount, peak, parseErrs := b.pods.snapshot()

	r := &results{
		Path: path, Complete: !b.gone.IsZero(), Jobs: len(b.queued),
		PollInterval: b.cfg.poll.String(), TaskDuration: b.cfg.task.String(), Nodes: b.cfg.nodes,
		MaxRunners: b.cfg.maxRunners, CPUs: runtime.NumCPU(), QueuedAfter: ms(queuedAfter),
		KubeClient: "$KUBECONFIG, no client-side rate limit",
		Pods:       podFigures{Created: podCount, PeakLive: peak, ArgParseErrors: parseErrs},
	}
	names := []string{"queued → pod seen", "pod → Running", "queued → Running", "Running → job picked",
		"queued → job picked", "picked → done", "queued → done", "done → pod gone"}
	samples := make([][]time.Duration, len(names))
	add := func(i int, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			samples[i] = append(samples[i], to.Sub(from))
		}
	}
	var firstQueued, lastDone time.Time
	ours := map[string]bool{}
	if b.cfg.kubeconfigFlag {
		r.KubeClient = "--kubeconfig, client-go default 5 QPS / burst 10"
	}
	for _, q := range b.queued {
		j := jobs[q.ID]
		ours[j.Handle] = true
		if firstQueued.IsZero() || j.Created.Before(firstQueued) {
			firstQueued = j.Created
		}
		switch {
		case j.Status == forgejosim.JobSuccess:
			r.Succeeded++
		case j.Status.Done():
			r.Failed++
		}
		if j.Status.Done() && j.Stopped.After(lastDone) {
			lastDone = j.Stopped
		}
		if tasks[j.ID] > 1 {
			r.Pods.TasksOverOne++
		}
		pt := byHandle[j.Handle]
		if pt.pods > 1 {
			r.Pods.JobsWithTwo++
		}
		add(0, j.Created, pt.seen)
		add(1, pt.seen, pt.running)
		add(2, j.Created, pt.running)
		add(3, pt.running, j.Started)
		add(4, j.Created, j.Started)
		add(5, j.Started, j.Stopped)
		add(6, j.Created, j.Stopped)
		add(7, j.Stopped, pt.gone)
	}
	for h, pt := range byHandle {
		if !ours[h] {
			r.Pods.WithoutJob += pt.pods
		}
	}
	for i, name := range names {
		r.Phases = append(r.Phases, summarize(name, samples[i]))
	}
	if !lastDone.IsZero() {
		r.BurstSeconds = lastDone.Sub(firstQueued).Seconds()
		if r.BurstSeconds > 0 {
			r.JobsPerSecond = float64(r.Succeeded+r.Failed) / r.BurstSeconds
		}
	}
	if r.Complete {
		r.CleanupSeconds = b.gone.Sub(lastDone).Seconds()
	}

	apiEnd, opEnd := b.apiEnd, b.opEnd
	if !r.Complete {
		// A stuck run still shows what the operator spent getting nowhere.
		apiEnd = b.counter.snapshot()
		st, err := operatorStats(b.op)
		if err != nil {
			return nil, err
		}
		opEnd = st
	}
	api := apiEnd.sub(b.apiStart)
	r.API = apiFigures{
		REST: api.REST, OperatorREST: api.OperatorREST, RunnerProtocol: api.Runner, Failed: api.Failed,
		JobsPolls: api.JobsPolls, Endpoints: api.Endpoints,
		OperatorRESTPerJob: float64(api.OperatorREST) / float64(len(b.queued)),
		RunnerPerJob:       float64(api.Runner) / float64(len(b.queued)),
	}
	r.Operator = operatorFigures{
		CPUBurstSeconds: (opEnd.CPU - b.opStart.CPU).Seconds(),
		CPUTotalSeconds: opEnd.CPU.Seconds(),
		CPUPerJobMS:     ms(opEnd.CPU-b.opStart.CPU) / float64(len(b.queued)),
		PeakRSSMiB:      float64(opEnd.HWM) / (1 << 20),
		RSSMiB:          float64(opEnd.RSS) / (1 << 20),
	}
	return r, nil
}

// summarize gives nearest-rank percentiles: each is a duration some job actually took.
func summarize(name string, d []time.Duration) phase {
	p := phase{Name: name, Count: len(d)}
	if len(d) == 0 {
		return p
	}
	slices.Sort(d)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(d)))) - 1
		return ms(d[max(i, 0)])
	}
	p.P50, p.P95, p.P99, p.Max = rank(0.50), rank(0.95), rank(0.99), ms(d[len(d)-1])
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// printResults prints every path's figures, as a JSON array with asJSON; otherwise one path after
// the other, then the main figures of all side by side.
func printResults(w io.Writer, all []*results, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	for _, r := range all {
		if err := r.print(w); err != nil {
			return err
		}
		_, _ = fmt.Fprintln(w)
	}
	if len(all) < 2 {
		return nil
	}
	return printSideBySide(w, all)
}

// printSideBySide prints a column of figures per path.
func printSideBySide(w io.Writer, all []*results) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, value func(*results) string) {
		_, _ = fmt.Fprint(tw, name, "\t")
		for _, r := range all {
			_, _ = fmt.Fprint(tw, value(r), "\t")
		}
		_, _ = fmt.Fprintln(tw)
	}
	row("path", func(r *results) string { return r.Path })
	row("complete", func(r *results) string { return fmt.Sprint(r.Complete) })
	for _, name := range []string{"queued → pod seen", "queued → Running", "queued → job picked", "queued → done"} {
		for i, q := range []string{"p50", "p95", "p99"} {
			row(name+" "+q+" ms", func(r *results) string {
				p := r.phase(name)
				return fmt.Sprintf("%.0f", []float64{p.P50, p.P95, p.P99}[i])
			})
		}
	}
	row("jobs/s", func(r *results) string { return fmt.Sprintf("%.2f", r.JobsPerSecond) })
	row("operator REST calls/job", func(r *results) string { return fmt.Sprintf("%.2f", r.API.OperatorRESTPerJob) })
	row("jobs polls", func(r *results) string { return fmt.Sprint(r.API.JobsPolls) })
	row("operator CPU ms/job", func(r *results) string { return fmt.Sprintf("%.1f", r.Operator.CPUPerJobMS) })
	row("operator peak RSS MiB", func(r *results) string { return fmt.Sprintf("%.1f", r.Operator.PeakRSSMiB) })
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the side-by-side table: %w", err)
	}
	return nil
}

// phase returns the phase named name; a zero one if there is none.
func (r *results) phase(name string) phase {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return phase{Name: name}
}

func (r *results) print(w io.Writer) error {
	status := "complete"
	if !r.Complete {
		status = "INCOMPLETE (timed out or interrupted; figures cover what finished)"
	}
	_, _ = fmt.Fprintf(w, "=== %s path ===\n", r.Path)
	_, _ = fmt.Fprintf(w, "burst of %d jobs: poll %s, task %s, %d nodes, maxRunners %d, %d CPUs — %s\n",
		r.Jobs, r.PollInterval, r.TaskDuration, r.Nodes, r.MaxRunners, r.CPUs, status)
	_, _ = fmt.Fprintf(w, "operator's kubeconfig from %s\n", r.KubeClient)
	_, _ = fmt.Fprintf(w, "queued %.0f ms after the operator's last jobs poll; %d succeeded, %d failed\n\n",
		r.QueuedAfter, r.Succeeded, r.Failed)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "phase\tn\tp50 ms\tp95 ms\tp99 ms\tmax ms\t")
	for _, p := range r.Phases {
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t\n", p.Name, p.Count, p.P50, p.P95, p.P99, p.Max)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the phase table: %w", err)
	}

	_, _ = fmt.Fprintf(w, "\nthroughput      %.2f jobs/s (first queued → last done %.1f s)\n", r.JobsPerSecond, r.BurstSeconds)
	if r.Complete {
		_, _ = fmt.Fprintf(w, "cleanup         %.1f s from the last job done until no Runner, pod, Secret or registration was left\n", r.CleanupSeconds)
	}
	_, _ = fmt.Fprintf(w, "Forgejo API     operator REST %d (%.2f/job, %d jobs polls), runner protocol %d (%.2f/job), failed answers %d\n",
		r.API.OperatorREST, r.API.OperatorRESTPerJob, r.API.JobsPolls, r.API.RunnerProtocol, r.API.RunnerPerJob, r.API.Failed)
	keys := make([]string, 0, len(r.API.Endpoints))
	for k := range r.API.Endpoints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, _ = fmt.Fprintf(w, "  %6d  %s\n", r.API.Endpoints[k], k)
	}
	_, _ = fmt.Fprintf(w, "operator        CPU %.2f s during the burst (%.1f ms/job), %.2f s in all; peak RSS %.1f MiB (%.1f MiB at the end)\n",
		r.Operator.CPUBurstSeconds, r.Operator.CPUPerJobMS, r.Operator.CPUTotalSeconds, r.Operator.PeakRSSMiB, r.Operator.RSSMiB)
	_, _ = fmt.Fprintf(w, "runner pods     %d created, at most %d at once; jobs with more than one pod %d, pods for no queued job %d, jobs run more than once %d\n",
		r.Pods.Created, r.Pods.PeakLive, r.Pods.JobsWithTwo, r.Pods.WithoutJob, r.Pods.TasksOverOne)
	for _, e := range r.Pods.ArgParseErrors {
		_, _ = fmt.Fprintf(w, "  pod arguments unreadable: %s\n", e)
	}
	return nil
}
