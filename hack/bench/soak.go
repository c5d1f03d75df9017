package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
)

// The soak path keeps jobs coming for -soak through three pools whose scopes overlap (global,
// the organization acme, the repository acme/app, all with the same label), with webhooks and
// polls racing (push deliveries, some sent before their run is listed; a 2 s poll), while the
// operator is restarted every -soak-restart, by SIGKILL and by SIGTERM in turn. Then it lets
// everything settle and checks the books: every job ran once and succeeded; no job had two
// Runners; runners made == jobs == registrations made (every pool has minIdle 0, so every runner
// is made for a job); nothing is left, in Forgejo or in the cluster.
const (
	soakNamespace = "bench-soak"
	soakPoll      = 2 * time.Second
	// soakRacing is the share of runs whose push is delivered before the run is listed.
	soakRacing = 0.3
	// soakSettle bounds the wait, after the last run is queued, for every job to be done and
	// every runner, pod and registration to be gone.
	soakSettle = 10 * time.Minute
	// soakMaxRunners is each pool's maxRunners: high enough that no job waits for a slot long.
	soakMaxRunners = 30
)

// soakRepos are where runs are queued, with the pools that cover each: the narrowest is meant to
// serve it.
var soakRepos = []string{"acme/app", "acme/lib", "zeta/tool"}

// soakPools are the three overlapping pools: name, scope, organization, repository.
var soakPools = []struct {
	name, org, repo string
	scope           v1alpha1.Scope
}{
	{name: "soak-global", scope: v1alpha1.ScopeGlobal},
	{name: "soak-org", scope: v1alpha1.ScopeOrganization, org: "acme"},
	{name: "soak-repo", scope: v1alpha1.ScopeRepository, repo: "acme/app"},
}

// soakResults are the soak path's books.
type soakResults struct {
	Path            string  `json:"path"`
	Seconds         float64 `json:"seconds"`
	SettleSeconds   float64 `json:"settleSeconds"`
	TaskSeconds     float64 `json:"taskSeconds"`
	Runs            int     `json:"runs"`
	Jobs            int     `json:"jobs"`
	JobsSucceeded   int     `json:"jobsSucceeded"`
	JobsNotDone     int     `json:"jobsNotDone"`
	JobsRunTwice    int     `json:"jobsRunTwice"`
	RunnersMade     int     `json:"runnersMade"`
	RunnersForJobs  int     `json:"runnersForJobs"`
	HandlesTwice    int     `json:"jobsWithTwoRunners"`
	Registrations   int     `json:"registrationsMade"`
	RestartsKilled  int     `json:"restartsKilled"`
	RestartsStopped int     `json:"restartsStopped"`
	// RunnersByPool shows which pool served: the narrowest covering one, whatever the timing.
	RunnersByPool map[string]int `json:"runnersByPool"`
	// PoolOfRepo counts, per repository, the pools whose runners served it.
	PoolOfRepo map[string]map[string]int `json:"poolOfRepository"`
	// Ends counts the Runners' last phase and reason as their deletion showed them.
	Ends          map[string]int `json:"ends"`
	Deliveries    int            `json:"deliveries"`
	JobsPolls     int            `json:"jobsPolls"`
	PeakRSSMiB    float64        `json:"peakRSSMiB"`
	LeftRegs      int            `json:"leftRegistrations"`
	LeftInCluster string         `json:"leftInCluster"`
	Failures      []string       `json:"failures,omitempty"`
}

// runSoak runs the soak path.
func (e *env) runSoak(ctx context.Context) (*soakResults, error) {
	cfg := e.cfg
	c := e.cluster
	res := &soakResults{Path: pathSoak, TaskSeconds: cfg.task.Seconds(), RunnersByPool: map[string]int{},
		PoolOfRepo: map[string]map[string]int{}, Ends: map[string]int{}}
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: soakNamespace}}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", soakNamespace, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "soak-token", Namespace: soakNamespace},
		StringData: map[string]string{"token": adminToken, "webhook": webhookSecret}}
	if err := c.Client.Create(ctx, secret); err != nil {
		return nil, fmt.Errorf("create the pools' Secret: %w", err)
	}
	for _, repo := range soakRepos {
		if err := e.sim.EnsureRepository(repo); err != nil {
			return nil, err
		}
	}
	webhookAddr, err := operatorproc.FreeAddr()
	if err != nil {
		return nil, fmt.Errorf("pick the webhook receiver's address: %w", err)
	}
	hook, err := e.sim.AddHook(forgejosim.HookConfig{
		URL: "http://" + webhookAddr + operator.WebhookPath, Secret: webhookSecret, Scope: forgejosim.InstanceScope(),
	})
	if err != nil {
		return nil, fmt.Errorf("add the simulator's webhook: %w", err)
	}
	defer func() { _ = e.sim.RemoveHook(hook.ID) }()

	wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: c.Scheme})
	if err != nil {
		return nil, fmt.Errorf("make a watching client: %w", err)
	}
	obs, stopObs, err := watchRunners(ctx, wc, soakNamespace)
	if err != nil {
		return nil, err
	}
	defer stopObs()
	before := e.counter.snapshot()
	ops := &soakOperators{e: e, webhookAddr: webhookAddr}
	if err := ops.start(ctx); err != nil {
		return nil, err
	}
	defer ops.stop()
	var pools []*v1alpha1.RunnerPool
	for _, p := range soakPools {
		pool := &v1alpha1.RunnerPool{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: soakNamespace},
			Spec: v1alpha1.RunnerPoolSpec{
				Forgejo: v1alpha1.ForgejoConnection{URL: e.forgejoURL, Scope: p.scope, Organization: p.org, Repository: p.repo,
					TokenSecretRef:   v1alpha1.SecretKeySelector{Name: secret.Name},
					WebhookSecretRef: &v1alpha1.SecretKeySelector{Name: secret.Name, Key: "webhook"}},
				Labels:  []string{"docker:host"},
				Scaling: v1alpha1.Scaling{MaxRunners: soakMaxRunners},
				History: v1alpha1.History{Limit: ptr.To[int32](20)},
			},
		}
		if err := c.Client.Create(ctx, pool); err != nil {
			return nil, fmt.Errorf("create RunnerPool %s: %w", p.name, err)
		}
		pools = append(pools, pool)
	}

	logf("%s path: queueing runs for %s over three overlapping pools, restarting the operator every %s", pathSoak, cfg.soak, cfg.soakRestart)
	start := time.Now()
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 1))
	var runs []forgejosim.Run
	nextRestart := start.Add(cfg.soakRestart)
	progress := start.Add(time.Minute)
	for time.Since(start) < cfg.soak {
		if time.Now().After(nextRestart) {
			if err := ops.restart(ctx); err != nil {
				return res, err
			}
			nextRestart = time.Now().Add(cfg.soakRestart)
		}
		run, err := e.sim.QueueRun(soakRun(rng, len(runs)))
		if err != nil {
			return res, fmt.Errorf("queue run %d: %w", len(runs)+1, err)
		}
		runs = append(runs, run)
		if time.Now().After(progress) {
			logf("%s path: %s in, %d runs queued, %d runners made, %d live", pathSoak, time.Since(start).Round(time.Second), len(runs), obs.made(), obs.live())
			progress = progress.Add(time.Minute)
		}
		if err := sleep(ctx, time.Duration(500+rng.IntN(2500))*time.Millisecond); err != nil {
			return res, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	logf("%s path: %d runs queued in %s; settling", pathSoak, len(runs), time.Since(start).Round(time.Second))
	settled := time.Now()
	settleErr := e.soakSettle(ctx, runs)
	res.SettleSeconds = time.Since(settled).Seconds()
	for i := 0; i < 40 && obs.live() > 0; i++ { // the watch may trail the direct reads
		_ = sleep(ctx, 50*time.Millisecond)
	}
	res.PeakRSSMiB = mib(ops.peakHWM())
	res.RestartsKilled, res.RestartsStopped = ops.killed, ops.stopped
	e.soakBooks(res, runs, obs, e.counter.snapshot().sub(before), hook.ID)
	left, err := leftInCluster(ctx, c, soakNamespace)
	if err != nil {
		return res, err
	}
	res.LeftInCluster = left
	res.LeftRegs = len(e.sim.State().Runners)
	res.check()
	if settleErr != nil {
		logf("operator log: %s (%s)", ops.current.LogPath, summarizeLog(ops.current.LogPath))
		return res, settleErr
	}
	for _, pool := range pools {
		if err := deletePool(ctx, c, pool); err != nil {
			return res, err
		}
	}
	if len(res.Failures) > 0 {
		return res, fmt.Errorf("the books do not balance: %s", strings.Join(res.Failures, "; "))
	}
	return res, nil
}

// soakRun is the i-th run: mostly single jobs, some two side by side, some build → test → deploy
// chains, over the three repositories.
func soakRun(rng *rand.Rand, i int) forgejosim.QueueRunRequest {
	req := forgejosim.QueueRunRequest{Repo: soakRepos[rng.IntN(len(soakRepos))], Title: fmt.Sprintf("soak %d", i+1), Workflow: "soak.yml"}
	switch n := rng.IntN(10); {
	case n < 6:
		req.Jobs = []forgejosim.RunJobSpec{{Name: "build", RunsOn: []string{"docker"}}}
	case n < 8:
		req.Jobs = []forgejosim.RunJobSpec{{Name: "lint", RunsOn: []string{"docker"}}, {Name: "unit", RunsOn: []string{"docker"}}}
	default:
		req.Jobs = chainJobs
	}
	return req
}

// soakSettle waits for every job of runs to be done and every runner, pod, runner Secret and
// registration to be gone.
func (e *env) soakSettle(ctx context.Context, runs []forgejosim.Run) error {
	want := map[int64]bool{}
	for _, r := range runs {
		for _, j := range r.Jobs {
			want[j.ID] = true
		}
	}
	deadline := time.Now().Add(soakSettle)
	for {
		state := e.sim.State()
		done := 0
		for _, j := range state.Jobs {
			if want[j.ID] && j.Status.Done() {
				done++
			}
		}
		if done == len(want) && len(state.Runners) == 0 {
			left, err := leftInCluster(ctx, e.cluster, soakNamespace)
			if err != nil {
				return err
			}
			if left == "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			var queued []forgejosim.Job
			for _, r := range runs {
				queued = append(queued, r.Jobs...)
			}
			return fmt.Errorf("not settled %s after the last run: %d of %d jobs done, %d registrations; %s",
				soakSettle, done, len(want), len(state.Runners), diagnose(e.sim, e.cluster, soakNamespace, queued))
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// soakBooks fills the figures from the simulator's state, the Runners seen and the calls made.
func (e *env) soakBooks(res *soakResults, runs []forgejosim.Run, obs *runnerObserver, api apiSnapshot, hookID int64) {
	state := e.sim.State()
	ours := map[int64]bool{}
	repoOf := map[string]string{}
	res.Runs = len(runs)
	for _, r := range runs {
		for _, j := range r.Jobs {
			ours[j.ID] = true
		}
	}
	tasks := map[int64]int{}
	for _, t := range state.Tasks {
		tasks[t.JobID]++
	}
	for _, j := range state.Jobs {
		if !ours[j.ID] {
			continue
		}
		res.Jobs++
		repoOf[j.Handle] = j.Repo
		switch {
		case j.Status == forgejosim.JobSuccess:
			res.JobsSucceeded++
		case !j.Status.Done():
			res.JobsNotDone++
		}
		if tasks[j.ID] > 1 {
			res.JobsRunTwice++
		}
	}
	for _, d := range state.Deliveries {
		if d.HookID == hookID {
			res.Deliveries++
		}
	}
	res.JobsPolls = api.JobsPolls
	for key, n := range api.Endpoints {
		if strings.HasPrefix(key, "POST ") && strings.HasSuffix(key, "/actions/runners") {
			res.Registrations += n
		}
	}
	seen := obs.snapshot()
	res.RunnersMade = len(seen)
	perHandle := map[string]int{}
	for _, rn := range seen {
		res.RunnersByPool[rn.pool]++
		if rn.handle == "" {
			continue
		}
		res.RunnersForJobs++
		perHandle[rn.handle]++
		repo := repoOf[rn.handle]
		if res.PoolOfRepo[repo] == nil {
			res.PoolOfRepo[repo] = map[string]int{}
		}
		res.PoolOfRepo[repo][rn.pool]++
		res.Ends[rn.end]++
	}
	for _, n := range perHandle {
		if n > 1 {
			res.HandlesTwice++
		}
	}
}

// check lists what does not balance.
func (r *soakResults) check() {
	add := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.JobsNotDone > 0 {
		add("%d jobs not done", r.JobsNotDone)
	}
	if r.JobsSucceeded != r.Jobs {
		add("%d of %d jobs succeeded", r.JobsSucceeded, r.Jobs)
	}
	if r.JobsRunTwice > 0 {
		add("%d jobs given to a runner twice", r.JobsRunTwice)
	}
	if r.HandlesTwice > 0 {
		add("%d jobs had two Runners", r.HandlesTwice)
	}
	if r.RunnersMade != r.Jobs {
		add("%d runners made for %d jobs", r.RunnersMade, r.Jobs)
	}
	if r.Registrations != r.RunnersMade {
		add("%d registrations made for %d runners", r.Registrations, r.RunnersMade)
	}
	if r.LeftRegs > 0 {
		add("%d registrations left in Forgejo", r.LeftRegs)
	}
	if r.LeftInCluster != "" {
		add("left in the cluster: %s", r.LeftInCluster)
	}
	for repo, pools := range r.PoolOfRepo {
		if want := soakNarrowest(repo); len(pools) != 1 || pools[want] == 0 {
			add("jobs of %s were served by %v, want only %s", repo, pools, want)
		}
	}
}

// soakNarrowest is the pool that should serve repo's jobs.
func soakNarrowest(repo string) string {
	switch {
	case repo == "acme/app":
		return "soak-repo"
	case strings.HasPrefix(repo, "acme/"):
		return "soak-org"
	}
	return "soak-global"
}

// soakOperators is the operator of the soak path, restarted in turn by SIGKILL and by SIGTERM.
type soakOperators struct {
	e           *env
	webhookAddr string
	current     *operatorproc.Process
	n           int
	killed      int
	stopped     int
	hwm         int64
}

func (o *soakOperators) start(ctx context.Context) error {
	o.n++
	op, err := startOperator(ctx, o.e.bin, o.e.dir, pathSoak+"-"+strconv.Itoa(o.n), o.e.cluster.Kubeconfig,
		o.e.cfg.kubeconfigFlag, o.e.cfg.records, soakPoll, o.webhookAddr)
	if err != nil {
		return err
	}
	o.current = op
	return nil
}

// restart ends the operator, by SIGKILL one time (as a crash or an evicted pod: its lease is
// held until it expires) and SIGTERM the next, and starts another.
func (o *soakOperators) restart(ctx context.Context) error {
	if st, err := operatorStats(o.current); err == nil {
		o.hwm = max(o.hwm, st.HWM)
	}
	if (o.killed+o.stopped)%2 == 0 {
		_ = syscall.Kill(-o.current.Pid(), syscall.SIGKILL)
		o.killed++
	} else {
		o.stopped++
	}
	o.current.Stop()
	logf("%s path: operator %d ended (%d killed, %d stopped); starting another", pathSoak, o.n, o.killed, o.stopped)
	return o.start(ctx)
}

func (o *soakOperators) stop() {
	if o.current != nil {
		o.current.Stop()
	}
}

func (o *soakOperators) peakHWM() int64 {
	if st, err := operatorStats(o.current); err == nil {
		o.hwm = max(o.hwm, st.HWM)
	}
	return o.hwm
}

// runnerObserver records every Runner created in a namespace, from a watch that outlives the
// operators: its pool, its job's handle and how it ended.
type runnerObserver struct {
	mu      sync.Mutex
	runners map[types.UID]*seenRunner
}

type seenRunner struct {
	pool, handle, end string
	gone              bool
}

func watchRunners(ctx context.Context, c client.WithWatch, ns string) (*runnerObserver, func(), error) {
	o := &runnerObserver{runners: map[types.UID]*seenRunner{}}
	var list v1alpha1.RunnerList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, nil, fmt.Errorf("list Runners: %w", err)
	}
	for i := range list.Items {
		o.observe(&list.Items[i], false)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rv := list.ResourceVersion
		for wctx.Err() == nil {
			w, err := c.Watch(wctx, &v1alpha1.RunnerList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
			if err != nil {
				logf("watch Runners: %v", err)
				_ = sleep(wctx, time.Second)
				continue
			}
			rv = o.drain(w, rv)
		}
	}()
	return o, func() { cancel(); <-done }, nil
}

// drain records a watch's events until it ends, and returns the last resourceVersion seen.
func (o *runnerObserver) drain(w watch.Interface, rv string) string {
	defer w.Stop()
	for ev := range w.ResultChan() {
		rn, ok := ev.Object.(*v1alpha1.Runner)
		if !ok {
			continue // an error event ends the watch; it is started again from rv
		}
		rv = rn.ResourceVersion
		switch ev.Type {
		case watch.Added, watch.Modified:
			o.observe(rn, false)
		case watch.Deleted:
			o.observe(rn, true)
		}
	}
	return rv
}

func (o *runnerObserver) observe(rn *v1alpha1.Runner, deleted bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.runners[rn.UID]
	if s == nil {
		s = &seenRunner{pool: rn.Spec.PoolName}
		o.runners[rn.UID] = s
	}
	if rn.Spec.Job != nil {
		s.handle = rn.Spec.Job.Handle
	}
	s.end = string(rn.Status.Outcome)
	if s.end == "" {
		s.end = "no outcome (" + string(rn.Status.Phase) + ")"
	}
	if rn.Status.Stop != nil {
		s.end += "/" + rn.Status.Stop.Reason
	}
	s.gone = s.gone || deleted
}

func (o *runnerObserver) made() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.runners)
}

func (o *runnerObserver) live() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range o.runners {
		if !s.gone {
			n++
		}
	}
	return n
}

func (o *runnerObserver) snapshot() []seenRunner {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]seenRunner, 0, len(o.runners))
	for _, s := range o.runners {
		out = append(out, *s)
	}
	return out
}

// printSoak prints the soak path's books.
func printSoak(w io.Writer, r *soakResults, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	verdict := "the books balance"
	if len(r.Failures) > 0 {
		verdict = "THE BOOKS DO NOT BALANCE: " + strings.Join(r.Failures, "; ")
	}
	lines := []string{
		fmt.Sprintf("soak: %.0f s of runs (task %.1f s), settled %.0f s after the last; %s", r.Seconds, r.TaskSeconds, r.SettleSeconds, verdict),
		fmt.Sprintf("  runs %d, jobs %d, succeeded %d, not done %d, run twice %d", r.Runs, r.Jobs, r.JobsSucceeded, r.JobsNotDone, r.JobsRunTwice),
		fmt.Sprintf("  runners made %d (for a job: %d), jobs with two Runners %d, registrations made %d", r.RunnersMade, r.RunnersForJobs, r.HandlesTwice, r.Registrations),
		fmt.Sprintf("  operator restarts: %d by SIGKILL, %d by SIGTERM; peak RSS %.1f MiB", r.RestartsKilled, r.RestartsStopped, r.PeakRSSMiB),
		fmt.Sprintf("  push deliveries %d, jobs polls %d (3 connections, one every %s each at rest)", r.Deliveries, r.JobsPolls, soakPoll),
		fmt.Sprintf("  left: %d registrations in Forgejo; in the cluster: %s", r.LeftRegs, cmpOr(r.LeftInCluster, "nothing")),
	}
	pools := make([]string, 0, len(r.RunnersByPool))
	for p := range r.RunnersByPool {
		pools = append(pools, p)
	}
	sort.Strings(pools)
	for _, p := range pools {
		lines = append(lines, fmt.Sprintf("  pool %s made %d runners", p, r.RunnersByPool[p]))
	}
	repos := make([]string, 0, len(r.PoolOfRepo))
	for repo := range r.PoolOfRepo {
		repos = append(repos, repo)
	}
	sort.Strings(repos)
	for _, repo := range repos {
		lines = append(lines, fmt.Sprintf("  jobs of %s served by %v", repo, r.PoolOfRepo[repo]))
	}
	ends := make([]string, 0, len(r.Ends))
	for e := range r.Ends {
		ends = append(ends, fmt.Sprintf("%s %d", e, r.Ends[e]))
	}
	slices.Sort(ends)
	lines = append(lines, "  runners ended as: "+strings.Join(ends, ", "))
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
