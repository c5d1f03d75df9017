package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// results are the figures of one burst; JSON with -json.
type results struct {
	// Path is how the jobs reached the operator: pathPoll, pathWebhook or pathChain.
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

	// Phases are the burst's, then the single jobs' (named with singlePrefix); the chain path's
	// are the chain phases.
	Phases []phase `json:"phases"`

	// Singles is how many jobs were queued one at a time after the burst; SinglesJobsPolls is
	// the jobs polls made from the first one's queueing until the last one's follow-up polls
	// were over: the polls they caused, and on the poll path the periodic polls that found them.
	Singles          int `json:"singles,omitempty"`
	SinglesJobsPolls int `json:"singles_jobs_polls,omitempty"`
	// Chains is how many runs of three chained jobs the chain path queued.
	Chains int `json:"chains,omitempty"`
	// Deliveries counts the simulator's deliveries to the operator's receiver by event and
	// answer ("push 202"), over the whole path.
	Deliveries map[string]int `json:"webhook_deliveries,omitempty"`

	// Seconds from the burst's first job queued to its last one done, and jobs per second over it.
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

// Phase names. The burst's keep the names they had before the webhook path was Forgejo 15's,
// so JSON of earlier runs compares. "queued" is the run's push delivery where the path has a
// webhook: the simulator creates it as it inserts the run, as Forgejo does; on the poll path,
// which has none, it is the run's insertion, the same moment.
const (
	phQueuedPod     = "queued → pod seen"
	phPodRunning    = "pod → Running"
	phQueuedRunning = "queued → Running"
	phRunningPicked = "Running → job picked"
	phQueuedPicked  = "queued → job picked"
	phPickedDone    = "picked → done"
	phQueuedDone    = "queued → done"
	phDoneGone      = "done → pod gone"

	// singlePrefix names the phases of the jobs queued one at a time.
	singlePrefix = "one job: "

	phChainFirstPod = "chain: push → first pod"
	phChainNextPod  = "chain: need done → next pod"
	phChainDone     = "chain: push → chain done"
)

var (
	burstPhases  = []string{phQueuedPod, phPodRunning, phQueuedRunning, phRunningPicked, phQueuedPicked, phPickedDone, phQueuedDone, phDoneGone}
	singlePhases = []string{phQueuedPod, phQueuedRunning, phQueuedDone}
	chainPhases  = []string{phChainFirstPod, phChainNextPod, phChainDone}
)

func (b *burst) results(path string, queuedAfter time.Duration) (*results, error) {
	state := b.sim.State()
	jobs := map[int64]forgejosim.Job{}
	for _, j := range state.Jobs {
		jobs[j.ID] = j
	}
	current := func(queued []forgejosim.Job) []forgejosim.Job {
		out := make([]forgejosim.Job, 0, len(queued))
		for _, q := range queued {
			out = append(out, jobs[q.ID])
		}
		return out
	}
	burstJobs, singleJobs := current(b.queued), current(b.singles)
	pushAt := pushTimes(state, b.hookID)
	byHandle, podCount, peak, parseErrs := b.pods.snapshot()

	r := newResults(path, b.cfg, !b.gone.IsZero(), len(b.queued))
	r.QueuedAfter = ms(queuedAfter)
	r.Singles = len(b.singles)
	r.SinglesJobsPolls = b.singlesPolls
	r.Deliveries = deliveryCounts(state.Deliveries, b.hookID)
	r.Pods = podFigures{Created: podCount, PeakLive: peak, ArgParseErrors: parseErrs}
	r.Pods.JobsWithTwo, r.Pods.WithoutJob, r.Pods.TasksOverOne = podChecks(append(slices.Clone(burstJobs), singleJobs...), state.Tasks, byHandle)

	var firstQueued, lastDone time.Time
	for _, j := range burstJobs {
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
	}
	r.Phases = summarizeAll("", burstPhases, jobSamples(burstJobs, pushAt, byHandle))
	if len(singleJobs) > 0 {
		r.Phases = append(r.Phases, summarizeAll(singlePrefix, singlePhases, jobSamples(singleJobs, pushAt, byHandle))...)
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
	r.costs(apiEnd.sub(b.apiStart), b.opStart, opEnd, len(b.queued))
	return r, nil
}

// chainResults gives the chain path's figures: the chain phases of every run queued, and what
// the operator spent on all of them.
func (e *env) chainResults(c *chainRun) (*results, error) {
	state := e.sim.State()
	mine := map[int64]bool{}
	for _, r := range c.runs {
		mine[r.ID] = true
	}
	var runs []forgejosim.Run
	var jobs []forgejosim.Job
	for _, r := range state.Runs {
		if mine[r.ID] {
			runs = append(runs, r)
			jobs = append(jobs, r.Jobs...)
		}
	}
	byHandle, podCount, peak, parseErrs := c.st.pods.snapshot()

	r := newResults(pathChain, e.cfg, c.complete, len(jobs))
	r.PollInterval = chainPoll.String()
	r.Chains = len(runs)
	r.Deliveries = deliveryCounts(state.Deliveries, c.st.hookID)
	r.Pods = podFigures{Created: podCount, PeakLive: peak, ArgParseErrors: parseErrs}
	r.Pods.JobsWithTwo, r.Pods.WithoutJob, r.Pods.TasksOverOne = podChecks(jobs, state.Tasks, byHandle)
	for _, j := range jobs {
		switch {
		case j.Status == forgejosim.JobSuccess:
			r.Succeeded++
		case j.Status.Done():
			r.Failed++
		}
	}
	r.Phases = summarizeAll("", chainPhases, chainSamples(runs, pushTimes(state, c.st.hookID), byHandle))

	apiEnd, opEnd := c.apiEnd, c.opEnd
	if !c.complete {
		apiEnd = e.counter.snapshot()
		st, err := operatorStats(c.st.op)
		if err != nil {
			return nil, err
		}
		opEnd = st
	}
	r.costs(apiEnd.sub(c.apiStart), c.opStart, opEnd, len(jobs))
	return r, nil
}

// newResults fills in what every path's figures say of the run's set-up.
func newResults(path string, cfg config, complete bool, jobs int) *results {
	r := &results{
		Path: path, Complete: complete, Jobs: jobs,
		PollInterval: cfg.poll.String(), TaskDuration: cfg.task.String(), Nodes: cfg.nodes,
		MaxRunners: cfg.maxRunners, CPUs: runtime.NumCPU(),
		KubeClient: "$KUBECONFIG, no client-side rate limit",
	}
	if cfg.kubeconfigFlag {
		r.KubeClient = "--kubeconfig, client-go default 5 QPS / burst 10"
	}
	return r
}

// costs fills in the Forgejo requests and the operator's CPU and memory between two moments;
// jobs is what the per-job figures divide by.
func (r *results) costs(api apiSnapshot, opStart, opEnd procStats, jobs int) {
	r.API = apiFigures{
		REST: api.REST, OperatorREST: api.OperatorREST, RunnerProtocol: api.Runner, Failed: api.Failed,
		JobsPolls: api.JobsPolls, Endpoints: api.Endpoints,
		OperatorRESTPerJob: float64(api.OperatorREST) / float64(max(jobs, 1)),
		RunnerPerJob:       float64(api.Runner) / float64(max(jobs, 1)),
	}
	r.Operator = operatorFigures{
		CPUBurstSeconds: (opEnd.CPU - opStart.CPU).Seconds(),
		CPUTotalSeconds: opEnd.CPU.Seconds(),
		CPUPerJobMS:     ms(opEnd.CPU-opStart.CPU) / float64(max(jobs, 1)),
		PeakRSSMiB:      float64(opEnd.HWM) / (1 << 20),
		RSSMiB:          float64(opEnd.RSS) / (1 << 20),
	}
}

// queuedAt is when a job was queued: its run's push delivery when there is one, otherwise its
// insertion (the simulator makes both at the same moment).
func queuedAt(j forgejosim.Job, pushAt map[int64]time.Time) time.Time {
	if t, ok := pushAt[j.RunID]; ok {
		return t
	}
	return j.Created
}

// pushTimes maps run ids to the creation of the first push delivery to hook hookID that
// announced them. A push payload names no run, only the commit it pushed (its "after"), which is
// the run's commit.
func pushTimes(state forgejosim.State, hookID int64) map[int64]time.Time {
	out := map[int64]time.Time{}
	if hookID == 0 {
		return out
	}
	runBySHA := map[string]int64{}
	for _, r := range state.Runs {
		runBySHA[r.CommitSHA] = r.ID
	}
	for _, d := range state.Deliveries {
		if d.HookID != hookID || d.Event != forgejosim.EventPush {
			continue
		}
		var push struct {
			After string `json:"after"`
		}
		if json.Unmarshal(d.Payload, &push) != nil {
			continue
		}
		id, ok := runBySHA[push.After]
		if !ok {
			continue
		}
		if t, seen := out[id]; !seen || d.Created.Before(t) {
			out[id] = d.Created
		}
	}
	return out
}

// deliveryCounts counts the deliveries to hook hookID by event and by the receiver's answer
// (its status code, or the delivery's status when none came back), e.g. "push 202".
func deliveryCounts(ds []forgejosim.Delivery, hookID int64) map[string]int {
	if hookID == 0 {
		return nil
	}
	out := map[string]int{}
	for _, d := range ds {
		if d.HookID != hookID {
			continue
		}
		answer := string(d.Status)
		if d.LastStatusCode != 0 {
			answer = strconv.Itoa(d.LastStatusCode)
		}
		out[d.Event+" "+answer]++
	}
	return out
}

// jobSamples gives each job's durations by burst phase name. Phases whose ends a job lacks (no
// pod seen, not done) get no sample from it.
func jobSamples(jobs []forgejosim.Job, pushAt map[int64]time.Time, byHandle map[string]podTimes) map[string][]time.Duration {
	samples := map[string][]time.Duration{}
	add := func(name string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			samples[name] = append(samples[name], to.Sub(from))
		}
	}
	for _, j := range jobs {
		queued := queuedAt(j, pushAt)
		pt := byHandle[j.Handle]
		add(phQueuedPod, queued, pt.seen)
		add(phPodRunning, pt.seen, pt.running)
		add(phQueuedRunning, queued, pt.running)
		add(phRunningPicked, pt.running, j.Started)
		add(phQueuedPicked, queued, j.Started)
		add(phPickedDone, j.Started, j.Stopped)
		add(phQueuedDone, queued, j.Stopped)
		add(phDoneGone, j.Stopped, pt.gone)
	}
	return samples
}

// chainSamples gives the chain phases of runs: from the push to the first runner pod, from the
// end of a job's needs in Forgejo to its own pod (Forgejo 15 says nothing when a need is met:
// the operator learns of the next job by polling when the runner of the last one ends), and from
// the push to the run's last job done.
func chainSamples(runs []forgejosim.Run, pushAt map[int64]time.Time, byHandle map[string]podTimes) map[string][]time.Duration {
	samples := map[string][]time.Duration{}
	for _, r := range runs {
		push, ok := pushAt[r.ID]
		if !ok {
			push = r.Created
		}
		byName := map[string]forgejosim.Job{}
		for _, j := range r.Jobs {
			byName[j.Name] = j
		}
		var firstPod, lastDone time.Time
		allDone := len(r.Jobs) > 0
		for _, j := range r.Jobs {
			seen := byHandle[j.Handle].seen
			allDone = allDone && j.Status.Done()
			lastDone = later(lastDone, j.Stopped)
			if len(j.Needs) == 0 {
				if !seen.IsZero() && (firstPod.IsZero() || seen.Before(firstPod)) {
					firstPod = seen
				}
				continue
			}
			var needsDone time.Time
			for _, n := range j.Needs {
				stopped := byName[n].Stopped
				if stopped.IsZero() {
					needsDone = time.Time{}
					break
				}
				needsDone = later(needsDone, stopped)
			}
			if !needsDone.IsZero() && !seen.IsZero() {
				samples[phChainNextPod] = append(samples[phChainNextPod], seen.Sub(needsDone))
			}
		}
		if !firstPod.IsZero() {
			samples[phChainFirstPod] = append(samples[phChainFirstPod], firstPod.Sub(push))
		}
		if allDone {
			samples[phChainDone] = append(samples[phChainDone], lastDone.Sub(push))
		}
	}
	return samples
}

// summarizeAll summarizes samples of the phases names, in that order, each named with prefix.
func summarizeAll(prefix string, names []string, samples map[string][]time.Duration) []phase {
	out := make([]phase, 0, len(names))
	for _, name := range names {
		out = append(out, summarize(prefix+name, samples[name]))
	}
	return out
}

// podChecks counts what must never happen: a job with more than one runner pod, runner pods for
// no job queued here, a job given to a runner more than once.
func podChecks(jobs []forgejosim.Job, tasks []forgejosim.Task, byHandle map[string]podTimes) (twoPods, withoutJob, runTwice int) {
	taken := map[int64]int{}
	for _, t := range tasks {
		taken[t.JobID]++
	}
	ours := map[string]bool{}
	for _, j := range jobs {
		ours[j.Handle] = true
		if taken[j.ID] > 1 {
			runTwice++
		}
		if byHandle[j.Handle].pods > 1 {
			twoPods++
		}
	}
	for h, pt := range byHandle {
		if !ours[h] {
			withoutJob += pt.pods
		}
	}
	return twoPods, withoutJob, runTwice
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

// printSideBySide prints a column of figures per path: "-" where a path has no such figure,
// and no row that no path has.
func printSideBySide(w io.Writer, all []*results) error {
	_, _ = fmt.Fprintln(w, "queued (push): the run's push delivery on the webhook and chain paths, its insertion on the poll path (no webhook);")
	_, _ = fmt.Fprintln(w, "one job: a job queued alone, once the operator is idle; chain: build → test → deploy tied by needs:, polling every 10m")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, value func(*results) string) {
		_, _ = fmt.Fprint(tw, name, "\t")
		for _, r := range all {
			_, _ = fmt.Fprint(tw, value(r), "\t")
		}
		_, _ = fmt.Fprintln(tw)
	}
	phaseRows := func(label, name string) {
		if !slices.ContainsFunc(all, func(r *results) bool { return r.phase(name).Count > 0 }) {
			return
		}
		for i, q := range []string{"p50", "p95", "p99"} {
			row(label+" "+q+" ms", func(r *results) string {
				p := r.phase(name)
				if p.Count == 0 {
					return "-"
				}
				return fmt.Sprintf("%.0f", []float64{p.P50, p.P95, p.P99}[i])
			})
		}
	}
	row("path", func(r *results) string { return r.Path })
	row("complete", func(r *results) string { return fmt.Sprint(r.Complete) })
	phaseRows("burst: queued (push) → pod seen", phQueuedPod)
	phaseRows("one job: queued (push) → pod seen", singlePrefix+phQueuedPod)
	phaseRows("burst: queued → Running", phQueuedRunning)
	phaseRows("one job: queued → Running", singlePrefix+phQueuedRunning)
	phaseRows("burst: queued → job picked", phQueuedPicked)
	phaseRows("burst: queued → done", phQueuedDone)
	phaseRows("one job: queued → done", singlePrefix+phQueuedDone)
	for _, name := range chainPhases {
		phaseRows(name, name)
	}
	dash := func(ok bool, format string, v any) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	row("burst jobs/s", func(r *results) string { return dash(r.JobsPerSecond > 0, "%.2f", r.JobsPerSecond) })
	row("jobs polls (burst; chain: all runs)", func(r *results) string { return fmt.Sprint(r.API.JobsPolls) })
	if slices.ContainsFunc(all, func(r *results) bool { return r.Singles > 0 }) {
		row("one job: jobs polls/job", func(r *results) string {
			return dash(r.Singles > 0, "%.1f", float64(r.SinglesJobsPolls)/float64(max(r.Singles, 1)))
		})
	}
	row("operator REST calls/job", func(r *results) string { return fmt.Sprintf("%.2f", r.API.OperatorRESTPerJob) })
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

// queuedNote says what "queued" is on the path.
func (r *results) queuedNote() string {
	switch r.Path {
	case pathPoll:
		return "queued = the run's insertion, when Forgejo would send its push; this path has no webhook, so the operator learns of jobs only by polling"
	case pathChain:
		return "push = the run's push delivery; need done = a job's end in Forgejo, which releases the next job with no webhook (Forgejo 15), so the operator polls when a runner ends"
	default:
		return "queued = the run's push delivery: Forgejo 15 sends one signed push per run and no job webhooks; the operator polls when it receives one"
	}
}

func (r *results) print(w io.Writer) error {
	status := "complete"
	if !r.Complete {
		status = "INCOMPLETE (timed out, stuck or interrupted; figures cover what finished)"
	}
	_, _ = fmt.Fprintf(w, "=== %s path ===\n", r.Path)
	what := fmt.Sprintf("burst of %d jobs", r.Jobs)
	switch {
	case r.Path == pathChain:
		what = fmt.Sprintf("%d runs of %d jobs (build → test → deploy, tied by needs:)", r.Chains, len(chainJobs))
	case r.Singles > 0:
		what += fmt.Sprintf(", then %d single jobs", r.Singles)
	}
	_, _ = fmt.Fprintf(w, "%s: poll %s, task %s, %d nodes, maxRunners %d, %d CPUs — %s\n",
		what, r.PollInterval, r.TaskDuration, r.Nodes, r.MaxRunners, r.CPUs, status)
	_, _ = fmt.Fprintf(w, "operator's kubeconfig from %s\n", r.KubeClient)
	_, _ = fmt.Fprintln(w, r.queuedNote())
	if r.Path != pathChain {
		_, _ = fmt.Fprintf(w, "burst queued %.0f ms after the operator's last jobs poll; ", r.QueuedAfter)
	}
	_, _ = fmt.Fprintf(w, "%d succeeded, %d failed\n\n", r.Succeeded, r.Failed)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "phase\tn\tp50 ms\tp95 ms\tp99 ms\tmax ms\t")
	for _, p := range r.Phases {
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t\n", p.Name, p.Count, p.P50, p.P95, p.P99, p.Max)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the phase table: %w", err)
	}
	_, _ = fmt.Fprintln(w)

	if r.BurstSeconds > 0 {
		_, _ = fmt.Fprintf(w, "throughput      %.2f jobs/s (the burst's first queued → last done %.1f s)\n", r.JobsPerSecond, r.BurstSeconds)
	}
	if r.CleanupSeconds > 0 {
		_, _ = fmt.Fprintf(w, "cleanup         %.1f s from the burst's last job done until no Runner, pod, Secret or registration was left\n", r.CleanupSeconds)
	}
	over := "during the burst"
	if r.Path == pathChain {
		over = fmt.Sprintf("over all runs, their follow-up polls included (%.1f jobs polls per run)",
			float64(r.API.JobsPolls)/float64(max(r.Chains, 1)))
	}
	_, _ = fmt.Fprintf(w, "Forgejo API     %s: operator REST %d (%.2f/job, %d jobs polls), runner protocol %d (%.2f/job), failed answers %d\n",
		over, r.API.OperatorREST, r.API.OperatorRESTPerJob, r.API.JobsPolls, r.API.RunnerProtocol, r.API.RunnerPerJob, r.API.Failed)
	for _, k := range sortedKeys(r.API.Endpoints) {
		_, _ = fmt.Fprintf(w, "  %6d  %s\n", r.API.Endpoints[k], k)
	}
	if r.Singles > 0 {
		_, _ = fmt.Fprintf(w, "one job         %.1f jobs polls per job, its follow-up polls after its end included\n",
			float64(r.SinglesJobsPolls)/float64(r.Singles))
	}
	if len(r.Deliveries) > 0 {
		parts := []string{}
		for _, k := range sortedKeys(r.Deliveries) {
			parts = append(parts, fmt.Sprintf("%d× %s", r.Deliveries[k], k))
		}
		_, _ = fmt.Fprintf(w, "webhook         deliveries to the operator by event and answer: %s\n", strings.Join(parts, ", "))
	}
	_, _ = fmt.Fprintf(w, "operator        CPU %.2f s while measured (%.1f ms/job), %.2f s in all; peak RSS %.1f MiB (%.1f MiB at the end)\n",
		r.Operator.CPUBurstSeconds, r.Operator.CPUPerJobMS, r.Operator.CPUTotalSeconds, r.Operator.PeakRSSMiB, r.Operator.RSSMiB)
	_, _ = fmt.Fprintf(w, "runner pods     %d created, at most %d at once; jobs with more than one pod %d, pods for no queued job %d, jobs run more than once %d\n",
		r.Pods.Created, r.Pods.PeakLive, r.Pods.JobsWithTwo, r.Pods.WithoutJob, r.Pods.TasksOverOne)
	for _, e := range r.Pods.ArgParseErrors {
		_, _ = fmt.Fprintf(w, "  pod arguments unreadable: %s\n", e)
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
