package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
)

// The scale path: -pools pools in one namespace (one global, the rest organization pools spread
// over a few organizations, all pools of a scope sharing one token and so one connection), whose
// spec.scaling.minIdle keep -runners warm runners together. The runner player's simulated runners
// wait for a task, so warm runners stay Running. At a quarter, half and all of both, once every
// runner is Idle, the operator's memory, CPU, reconciles and Forgejo calls are measured over
// -window, and a line is fitted to its memory against runners.

const (
	// The defaults are the largest size measured on a 2-CPU machine within the default
	// -timeout: about 6 minutes in all, 80 s of it the last ramp.
	defaultScalePools   = 200
	defaultScaleRunners = 2000
	// maxScaleOrgs is how many organizations the organization pools are spread over.
	maxScaleOrgs = 5
	// podsPerNode is the simulated cluster's pod capacity per fake node (test/cluster).
	podsPerNode = 250
	// projectRunners and projectPools are the size the fitted line is projected to.
	projectRunners = 10000
	projectPools   = 500
	scaleNamespace = "bench-scale"
)

// scaleSize is one size the scale path measures.
type scaleSize struct {
	Pools   int `json:"pools"`
	Runners int `json:"runners"`
}

// scaleSizes are a quarter, half and all of pools and runners, pools and runners growing
// together so that every size has about as many runners a pool; sizes that round to the same
// are measured once, and every pool keeps at least one runner.
func scaleSizes(pools, runners int) []scaleSize {
	var out []scaleSize
	for _, div := range []int{4, 2, 1} {
		s := scaleSize{Pools: max(1, pools/div), Runners: max(1, runners/div)}
		s.Runners = max(s.Runners, s.Pools)
		if len(out) > 0 && out[len(out)-1] == s {
			continue
		}
		out = append(out, s)
	}
	return out
}

// spread shares total among n as evenly as can be, the larger shares first.
func spread(total, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

// scaleNodes is how many fake nodes hold runners pods with a quarter to spare for pods that
// are ending while others start.
func scaleNodes(runners int) int {
	return max(1, (runners+runners/4+podsPerNode-1)/podsPerNode)
}

// scaleOrgCount is how many organizations pools pools are spread over: pool 0 is global.
func scaleOrgCount(pools int) int { return min(maxScaleOrgs, pools-1) }

// poolOrg is the organization of pool i, "" for the global pool 0.
func poolOrg(i, orgs int) string {
	if i == 0 || orgs == 0 {
		return ""
	}
	return fmt.Sprintf("scale-org-%d", (i-1)%orgs+1)
}

// connections is how many distinct Forgejo connections (URL, scope, token) the first pools pools
// use.
func connections(pools, orgs int) int { return 1 + min(orgs, pools-1) }

// scaleStep is what was measured at one size.
type scaleStep struct {
	scaleSize
	Connections int `json:"connections"`
	// Complete is whether every runner was Idle; when not, only the ramp was measured.
	Complete     bool    `json:"complete"`
	RampSeconds  float64 `json:"ramp_s"`
	IdleAtStart  int     `json:"idle_at_window_start"`
	IdleAtEnd    int     `json:"idle_at_window_end"`
	WindowSecond float64 `json:"window_s"`
	// PeakRSSMiB is the operator's VmHWM: its peak over its whole life so far, ramps included.
	PeakRSSMiB      float64 `json:"peak_rss_mib"`
	WindowMaxRSSMiB float64 `json:"window_max_rss_mib"`
	RSSEndMiB       float64 `json:"rss_end_mib"`
	CPUPerMinute    float64 `json:"cpu_s_per_min"`
	// ReconcilesPerSecond is from controller_runtime_reconcile_total, by controller; nil when
	// the metrics endpoint did not answer.
	ReconcilesPerSecond map[string]float64 `json:"reconciles_per_s,omitempty"`
	// Per poll interval over the window.
	JobsPollsPerInterval      float64            `json:"jobs_polls_per_interval"`
	OperatorRESTPerInterval   float64            `json:"operator_rest_per_interval"`
	RunnerProtocolPerInterval float64            `json:"runner_protocol_per_interval"`
	EndpointsPerInterval      map[string]float64 `json:"operator_endpoints_per_interval"`
	// PodsMadeInWindow is runner pods created during the window: churn, when warm runners
	// should just wait.
	PodsMadeInWindow int `json:"pods_made_in_window"`
}

// lineFit is y = Intercept + Slope·x by least squares.
type lineFit struct {
	Points    int     `json:"points"`
	Intercept float64 `json:"intercept_mib"`
	Slope     float64 `json:"mib_per_runner"`
	At10k     float64 `json:"projected_mib_at_10000_runners"`
}

// scaleResults are the scale path's figures; JSON with -json.
type scaleResults struct {
	Path         string      `json:"path"`
	Pools        int         `json:"pools"`
	Runners      int         `json:"runners"`
	Orgs         int         `json:"organizations"`
	PollInterval string      `json:"poll_interval"`
	Window       string      `json:"window"`
	Nodes        int         `json:"nodes"`
	CPUs         int         `json:"cpus"`
	Steps        []scaleStep `json:"steps"`
	// FitPeak and FitEnd fit peak and end-of-window RSS against runners over the complete steps.
	FitPeak *lineFit `json:"fit_peak_rss,omitempty"`
	FitEnd  *lineFit `json:"fit_end_rss,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// fitLine fits y = a + b·x by least squares; false with fewer than two distinct x.
func fitLine(xs, ys []float64) (lineFit, bool) {
	n := float64(len(xs))
	if len(xs) < 2 || len(xs) != len(ys) {
		return lineFit{}, false
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return lineFit{}, false
	}
	b := (n*sxy - sx*sy) / den
	a := (sy - b*sx) / n
	return lineFit{Points: len(xs), Intercept: a, Slope: b, At10k: project(a, b, projectRunners)}, true
}

// project is the line a + b·x at x.
func project(a, b float64, x int) float64 { return a + b*float64(x) }

// fits fits peak and end RSS against runners over the complete steps.
func (r *scaleResults) fits() {
	var xs, peak, end []float64
	for _, s := range r.Steps {
		if !s.Complete {
			continue
		}
		xs = append(xs, float64(s.Runners))
		peak = append(peak, s.PeakRSSMiB)
		end = append(end, s.RSSEndMiB)
	}
	if f, ok := fitLine(xs, peak); ok {
		r.FitPeak = &f
	}
	if f, ok := fitLine(xs, end); ok {
		r.FitEnd = &f
	}
}

// largest is the largest complete step; nil when none is.
func (r *scaleResults) largest() *scaleStep {
	var l *scaleStep
	for i := range r.Steps {
		if r.Steps[i].Complete {
			l = &r.Steps[i]
		}
	}
	return l
}

// runScale runs the scale path. Its pools and runners are left for the cluster's teardown.
func (e *env) runScale(ctx context.Context) (*scaleResults, error) {
	cfg := e.cfg
	orgs := scaleOrgCount(cfg.pools)
	res := &scaleResults{
		Path: pathScale, Pools: cfg.pools, Runners: cfg.runners, Orgs: orgs,
		PollInterval: cfg.poll.String(), Window: cfg.window.String(),
		Nodes: max(cfg.nodes, scaleNodes(cfg.runners)), CPUs: runtime.NumCPU(),
	}
	c := e.cluster
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace}}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", scaleNamespace, err)
	}
	// One Secret a scope: the pools of a scope share its token and so one connection.
	secretOf := map[string]string{"": "scale-global-token"}
	tokens := map[string]string{"": adminToken}
	for i := 1; i <= orgs; i++ {
		org := poolOrg(i, orgs)
		if err := e.sim.EnsureOrganization(org); err != nil {
			return nil, err
		}
		tok, err := e.sim.CreateToken(forgejosim.OrganizationScope(org))
		if err != nil {
			return nil, err
		}
		secretOf[org], tokens[org] = "scale-"+org+"-token", tok
	}
	for org, name := range secretOf {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scaleNamespace}, StringData: map[string]string{"token": tokens[org]}}
		if err := c.Client.Create(ctx, s); err != nil {
			return nil, fmt.Errorf("create Secret %s: %w", name, err)
		}
	}

	metricsAddr, err := operatorproc.FreeAddr()
	if err != nil {
		return nil, fmt.Errorf("pick the metrics address: %w", err)
	}
	logf("%s path: starting the operator (--poll-interval %s, metrics on %s)", pathScale, cfg.poll, metricsAddr)
	op, err := startOperator(ctx, e.bin, e.dir, pathScale, c.Kubeconfig, cfg.kubeconfigFlag, cfg.records, cfg.poll, "0",
		"--metrics-bind-address="+metricsAddr, "--metrics-secure=false")
	if err != nil {
		return nil, err
	}
	defer op.Stop()
	pods, stopPods, err := watchPods(ctx, c, scaleNamespace)
	if err != nil {
		return nil, err
	}
	defer stopPods()

	var pools []*v1alpha1.RunnerPool
	deadline, hasDeadline := ctx.Deadline()
	for _, size := range scaleSizes(cfg.pools, cfg.runners) {
		// Leave the window and a margin for the teardown.
		rampBy := time.Now().Add(time.Hour)
		if hasDeadline {
			rampBy = deadline.Add(-cfg.window - 30*time.Second)
		}
		if time.Until(rampBy) < 30*time.Second {
			res.Notes = append(res.Notes, fmt.Sprintf("no time left within -timeout for %d pools, %d runners", size.Pools, size.Runners))
			break
		}
		step := scaleStep{scaleSize: size, Connections: connections(size.Pools, orgs)}
		logf("%s path: %d pools keeping %d warm runners over %d connections", pathScale, size.Pools, size.Runners, step.Connections)
		start := time.Now()
		minIdle := spread(size.Runners, size.Pools)
		for i := range size.Pools {
			if i < len(pools) {
				if err := setMinIdle(ctx, c.Client, pools[i], minIdle[i]); err != nil {
					return res, err
				}
				continue
			}
			org := poolOrg(i, orgs)
			p, err := createScalePool(ctx, c.Client, i, org, secretOf[org], e.forgejoURL, minIdle[i])
			if err != nil {
				return res, err
			}
			pools = append(pools, p)
		}
		rampCtx, cancel := context.WithDeadline(ctx, rampBy)
		idle, err := waitIdle(rampCtx, c.Client, size.Runners, pods)
		cancel()
		step.RampSeconds = time.Since(start).Seconds()
		if err != nil {
			step.IdleAtStart = idle
			if st, serr := operatorStats(op); serr == nil {
				step.PeakRSSMiB, step.RSSEndMiB = mib(st.HWM), mib(st.RSS)
			}
			res.Steps = append(res.Steps, step)
			res.Notes = append(res.Notes, fmt.Sprintf("%d pools, %d runners: only %d Idle after %.0f s (%v)", size.Pools, size.Runners, idle, step.RampSeconds, err))
			logf("operator log: %s (%s)", op.LogPath, summarizeLog(op.LogPath))
			break
		}
		step.IdleAtStart = idle
		logf("%s path: %d runners Idle after %.0f s; measuring for %s", pathScale, idle, step.RampSeconds, cfg.window)
		if err := e.measure(ctx, op, pods, metricsAddr, &step); err != nil {
			return res, err
		}
		step.Complete = true
		res.Steps = append(res.Steps, step)
	}
	res.fits()
	logf("operator log: %s", summarizeLog(op.LogPath))
	if res.largest() == nil {
		return res, fmt.Errorf("no size reached all its runners Idle: %s", strings.Join(res.Notes, "; "))
	}
	return res, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func createScalePool(ctx context.Context, c client.Client, i int, org, secret, forgejoURL string, minIdle int) (*v1alpha1.RunnerPool, error) {
	conn := v1alpha1.ForgejoConnection{URL: forgejoURL, Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret}}
	if org != "" {
		conn.Scope, conn.Organization = v1alpha1.ScopeOrganization, org
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%03d", i), Namespace: scaleNamespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: conn,
			Labels:  []string{"docker:host"},
			Scaling: v1alpha1.Scaling{MinIdle: int32(minIdle), MaxRunners: int32(max(minIdle, 1))},
			History: v1alpha1.History{Limit: ptr.To[int32](10)},
		},
	}
	if err := c.Create(ctx, pool); err != nil {
		return nil, fmt.Errorf("create RunnerPool %s: %w", pool.Name, err)
	}
	return pool, nil
}

// setMinIdle sets pool's minIdle (and maxRunners with it) to n, retrying on conflicts.
func setMinIdle(ctx context.Context, c client.Client, pool *v1alpha1.RunnerPool, n int) error {
	for range 5 {
		var cur v1alpha1.RunnerPool
		if err := c.Get(ctx, client.ObjectKeyFromObject(pool), &cur); err != nil {
			return fmt.Errorf("get RunnerPool %s: %w", pool.Name, err)
		}
		if int(cur.Spec.Scaling.MinIdle) == n {
			return nil
		}
		cur.Spec.Scaling.MinIdle, cur.Spec.Scaling.MaxRunners = int32(n), int32(max(n, 1))
		err := c.Update(ctx, &cur)
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("update RunnerPool %s: %w", pool.Name, err)
		}
	}
	return fmt.Errorf("update RunnerPool %s: conflicts", pool.Name)
}

// idleRunners counts the Runners in the scale namespace by phase.
func idleRunners(ctx context.Context, c client.Client) (int, map[string]int, error) {
	var runners v1alpha1.RunnerList
	if err := c.List(ctx, &runners, client.InNamespace(scaleNamespace)); err != nil {
		return 0, nil, fmt.Errorf("list Runners: %w", err)
	}
	phases := map[string]int{}
	for _, r := range runners.Items {
		phases[string(r.Status.Phase)]++
	}
	return phases[string(v1alpha1.RunnerIdle)], phases, nil
}

// waitIdle waits until want Runners are Idle; it returns how many are.
func waitIdle(ctx context.Context, c client.Client, want int, pods *podObserver) (int, error) {
	lastLog := time.Now()
	idle := 0
	for {
		n, phases, err := idleRunners(ctx, c)
		if err == nil {
			idle = n
			if idle >= want {
				return idle, nil
			}
			if time.Since(lastLog) >= 10*time.Second {
				logf("%s path: %d of %d runners Idle; Runners %s; %d runner pods live", pathScale, idle, want, countsString(phases), pods.live())
				lastLog = time.Now()
			}
		}
		if err := sleep(ctx, time.Second); err != nil {
			return idle, err
		}
	}
}

// measure fills in step's figures over -window.
func (e *env) measure(ctx context.Context, op *operatorproc.Process, pods *podObserver, metricsAddr string, step *scaleStep) error {
	window := e.cfg.window
	opStart, err := operatorStats(op)
	if err != nil {
		return err
	}
	apiStart := e.counter.snapshot()
	recStart, recErr := scrapeReconciles(ctx, metricsAddr)
	podsStart := pods.created()
	t0 := time.Now()
	maxRSS := opStart.RSS
	for time.Since(t0) < window {
		if err := sleep(ctx, min(time.Second, window-time.Since(t0))); err != nil {
			return err
		}
		st, err := operatorStats(op)
		if err != nil {
			return err
		}
		maxRSS = max(maxRSS, st.RSS)
	}
	elapsed := time.Since(t0)
	opEnd, err := operatorStats(op)
	if err != nil {
		return err
	}
	api := e.counter.snapshot().sub(apiStart)
	recEnd, recErr2 := scrapeReconciles(ctx, metricsAddr)
	step.PodsMadeInWindow = pods.created() - podsStart
	step.IdleAtEnd, _, _ = idleRunners(ctx, e.cluster.Client)

	step.WindowSecond = elapsed.Seconds()
	step.PeakRSSMiB, step.WindowMaxRSSMiB, step.RSSEndMiB = mib(opEnd.HWM), mib(max(maxRSS, opEnd.RSS)), mib(opEnd.RSS)
	step.CPUPerMinute = (opEnd.CPU - opStart.CPU).Seconds() / elapsed.Minutes()
	if recErr == nil && recErr2 == nil {
		step.ReconcilesPerSecond = map[string]float64{}
		for k, v := range recEnd {
			step.ReconcilesPerSecond[k] = (v - recStart[k]) / elapsed.Seconds()
		}
	} else {
		logf("%s path: no reconcile figures: %v", pathScale, firstErr(recErr, recErr2))
	}
	intervals := elapsed.Seconds() / e.cfg.poll.Seconds()
	step.JobsPollsPerInterval = float64(api.JobsPolls) / intervals
	step.OperatorRESTPerInterval = float64(api.OperatorREST) / intervals
	step.RunnerProtocolPerInterval = float64(api.Runner) / intervals
	step.EndpointsPerInterval = map[string]float64{}
	for k, n := range api.Endpoints {
		if _, path, _ := strings.Cut(k, " "); strings.HasPrefix(path, "/api/v1/") {
			step.EndpointsPerInterval[k] = float64(n) / intervals
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// scrapeReconciles reads controller_runtime_reconcile_total from the operator's metrics
// endpoint, summed by controller.
func scrapeReconciles(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseReconciles(resp.Body)
}

// parseReconciles sums controller_runtime_reconcile_total by its controller label in
// Prometheus text exposition.
func parseReconciles(r io.Reader) (map[string]float64, error) {
	const name = "controller_runtime_reconcile_total"
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		labels, value := "", ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			labels, value = line[len(name):i+1], strings.TrimSpace(line[i+1:])
		} else {
			value = strings.TrimSpace(line[len(name):])
		}
		if f := strings.Fields(value); len(f) > 0 {
			value = f[0] // a timestamp may follow
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		controller := "?"
		if _, rest, ok := strings.Cut(labels, `controller="`); ok {
			controller, _, _ = strings.Cut(rest, `"`)
		}
		out[controller] += v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s in /metrics", name)
	}
	return out, nil
}

// printScale prints the scale path's figures: a table of sizes, the operator's Forgejo calls
// at the largest size, the fits and the largest size run.
func printScale(w io.Writer, r *scaleResults, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	_, _ = fmt.Fprintf(w, "scale path: up to %d pools (1 global, the rest on %d organizations) keeping %d warm runners; poll interval %s, window %s, %d fake nodes, %d CPUs\n",
		r.Pools, r.Orgs, r.Runners, r.PollInterval, r.Window, r.Nodes, r.CPUs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "pools\trunners\tconns\tcomplete\tramp s\tidle end\tpeak RSS MiB\twindow max MiB\tend RSS MiB\tCPU s/min\treconciles/s\tjobs polls/interval\toperator REST/interval\trunner proto/interval\tpods made in window\t")
	for _, s := range r.Steps {
		rec := "-"
		if s.ReconcilesPerSecond != nil {
			var sum float64
			for _, v := range s.ReconcilesPerSecond {
				sum += v
			}
			rec = fmt.Sprintf("%.2f", sum)
		}
		if !s.Complete {
			_, _ = fmt.Fprintf(tw, "%d\t%d\t%d\tno (%d Idle)\t%.0f\t-\t%.1f\t-\t%.1f\t-\t-\t-\t-\t-\t-\t\n",
				s.Pools, s.Runners, s.Connections, s.IdleAtStart, s.RampSeconds, s.PeakRSSMiB, s.RSSEndMiB)
			continue
		}
		_, _ = fmt.Fprintf(tw, "%d\t%d\t%d\tyes\t%.0f\t%d\t%.1f\t%.1f\t%.1f\t%.2f\t%s\t%.2f\t%.1f\t%.0f\t%d\t\n",
			s.Pools, s.Runners, s.Connections, s.RampSeconds, s.IdleAtEnd, s.PeakRSSMiB, s.WindowMaxRSSMiB, s.RSSEndMiB,
			s.CPUPerMinute, rec, s.JobsPollsPerInterval, s.OperatorRESTPerInterval, s.RunnerProtocolPerInterval, s.PodsMadeInWindow)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	l := r.largest()
	if l != nil {
		_, _ = fmt.Fprintf(w, "jobs polls per interval at %d pools: %.2f over %d distinct connections (want one per connection)\n",
			l.Pools, l.JobsPollsPerInterval, l.Connections)
		if len(l.ReconcilesPerSecond) > 0 {
			parts := []string{}
			for _, k := range sortedFloatKeys(l.ReconcilesPerSecond) {
				parts = append(parts, fmt.Sprintf("%s %.2f", k, l.ReconcilesPerSecond[k]))
			}
			_, _ = fmt.Fprintf(w, "reconciles/s by controller: %s\n", strings.Join(parts, ", "))
		}
		_, _ = fmt.Fprintln(w, "operator REST calls per poll interval by endpoint:")
		for _, k := range sortedFloatKeys(l.EndpointsPerInterval) {
			_, _ = fmt.Fprintf(w, "  %7.2f  %s\n", l.EndpointsPerInterval[k], k)
		}
	}
	fitLineOut := func(what string, f *lineFit) {
		if f == nil {
			_, _ = fmt.Fprintf(w, "%s: no fit (it needs two complete sizes)\n", what)
			return
		}
		_, _ = fmt.Fprintf(w, "%s = %.1f MiB + %.4f MiB × runners (least squares over %d sizes); projected at %d runners over %d pools: %.0f MiB\n",
			what, f.Intercept, f.Slope, f.Points, projectRunners, projectPools, f.At10k)
	}
	fitLineOut("peak RSS", r.FitPeak)
	fitLineOut("end RSS", r.FitEnd)
	if l != nil && l.Pools > 0 {
		_, _ = fmt.Fprintf(w, "(pools grew with runners at %d runners a pool; %d over %d is %d a pool, so the projection assumes the per-runner cost covers the per-pool one)\n",
			l.Runners/l.Pools, projectRunners, projectPools, projectRunners/projectPools)
	}
	for _, n := range r.Notes {
		_, _ = fmt.Fprintf(w, "note: %s\n", n)
	}
	if l == nil {
		_, err := fmt.Fprintln(w, "largest size run: none reached all its runners Idle")
		return err
	}
	_, err := fmt.Fprintf(w, "largest size run: %d pools, %d runners Idle over %d connections, on %d CPUs\n", l.Pools, l.Runners, l.Connections, r.CPUs)
	return err
}

func sortedFloatKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
