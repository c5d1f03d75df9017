package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/runnerplay"
)

const (
	leaseNamespace = "default"
	poolName       = "bench"
	adminToken     = "bench-admin-token"
	webhookSecret  = "bench-webhook-secret"
	// benchRepo is where every path's runs are queued; the pools are global, so it is any one.
	benchRepo = "acme/app"
)

// run sets everything up, runs each path and tears everything down again. Figures are
// returned even when a burst did not finish, so that a stuck run still shows how far it got.
func run(ctx context.Context, cfg config) (all []*results, sc *scaleResults, err error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return nil, nil, fmt.Errorf("find the repository: %w", err)
	}
	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bench-"); err != nil {
			return nil, nil, fmt.Errorf("make work directory: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("make work directory: %w", err)
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		if err != nil || cfg.keep {
			logf("logs kept in %s", dir)
		} else if rmErr := os.RemoveAll(dir); rmErr != nil {
			logf("remove %s: %v", dir, rmErr)
		}
	}()

	e := &env{cfg: cfg, dir: dir, bin: cfg.operatorBin, counter: newAPICounter()}
	if e.bin == "" {
		// Built before the cluster starts, so the compiler does not compete with it.
		logf("building the operator")
		if e.bin, err = operatorproc.Build(ctx, root, dir); err != nil {
			return nil, nil, err
		}
	}
	nodes := cfg.nodes
	if slices.Contains(cfg.paths, pathScale) {
		nodes = max(nodes, scaleNodes(cfg.runners))
	}
	logf("starting the simulated cluster (%d nodes)", nodes)
	e.cluster, err = cluster.Start(ctx, cluster.Options{Nodes: nodes, Dir: filepath.Join(dir, "cluster"), KeepDir: true})
	if err != nil {
		return nil, nil, fmt.Errorf("start the simulated cluster: %w", err)
	}
	cleanups = append(cleanups, func() {
		if err := e.cluster.Stop(); err != nil {
			logf("stop the cluster: %v", err)
		}
	})

	racing := 0.0
	if slices.Contains(cfg.paths, pathSoak) {
		racing = soakRacing
	}
	sim, forgejoURL, closeSim, err := startForgejo(e.counter, racing)
	if err != nil {
		return nil, nil, err
	}
	e.sim, e.forgejoURL = sim, forgejoURL
	cleanups = append(cleanups, closeSim)

	playCtx, stopPlaying := context.WithCancel(context.Background())
	player := &runnerplay.Player{Cluster: e.cluster, TaskDuration: cfg.task}
	played := make(chan struct{})
	go func() {
		defer close(played)
		player.Run(playCtx)
	}()
	cleanups = append(cleanups, func() {
		stopPlaying()
		<-played
	})

	for _, path := range cfg.paths {
		var res *results
		if path == pathSoak {
			soak, err := e.runSoak(ctx)
			if soak != nil {
				if perr := printSoak(os.Stdout, soak, cfg.jsonOut); perr != nil {
					logf("print soak figures: %v", perr)
				}
			}
			if err != nil {
				return all, sc, fmt.Errorf("%s path: %w", path, err)
			}
			continue
		}
		if path == pathScale {
			sc, err = e.runScale(ctx)
			if err != nil {
				return all, sc, fmt.Errorf("%s path: %w", path, err)
			}
			continue
		}
		if path == pathChain {
			res, err = e.runChains(ctx)
		} else {
			res, err = e.runPath(ctx, path)
		}
		if res != nil {
			all = append(all, res)
		}
		if err != nil {
			return all, sc, fmt.Errorf("%s path: %w", path, err)
		}
	}
	return all, sc, nil
}

// env is what the paths share: the cluster, the simulator and its request counter.
type env struct {
	cfg        config
	dir, bin   string
	cluster    *cluster.Cluster
	sim        *forgejosim.Server
	forgejoURL string
	counter    *apiCounter
}

// stage is what one path has of its own: a namespace, an operator, the simulator's hook to its
// webhook receiver (with webhook), a pool and a watch of the pool's runner pods. Each path
// starts from nothing, so one path's polls, runners and deliveries are never another's.
type stage struct {
	path string
	ns   string
	op   *operatorproc.Process
	pods *podObserver
	pool *v1alpha1.RunnerPool
	// hookID is the simulator's hook to this operator; 0 without a webhook.
	hookID int64
	// before are the counters before the operator started.
	before  apiSnapshot
	closers []func()
}

// startStage sets up path's stage with an operator polling every poll; with webhook, the
// simulator sends the deliveries of every repository to the operator's receiver, signed with the
// secret the pool names. On error, what was started is stopped again.
func (e *env) startStage(ctx context.Context, path string, poll time.Duration, webhook bool) (st *stage, err error) {
	logf("%s path: starting the operator (--poll-interval %s)", path, poll)
	st = &stage{path: path, ns: "bench-" + path}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	if err := e.cluster.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: st.ns}}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", st.ns, err)
	}
	webhookAddr := "0"
	if webhook {
		if webhookAddr, err = operatorproc.FreeAddr(); err != nil {
			return nil, fmt.Errorf("pick the webhook receiver's address: %w", err)
		}
		// A system hook, as a global pool's is, with Forgejo 15's default events: a push per run.
		hook, err := e.sim.AddHook(forgejosim.HookConfig{
			URL: "http://" + webhookAddr + operator.WebhookPath, Secret: webhookSecret, Scope: forgejosim.InstanceScope(),
		})
		if err != nil {
			return nil, fmt.Errorf("add the simulator's webhook: %w", err)
		}
		st.hookID = hook.ID
		st.closers = append(st.closers, func() { _ = e.sim.RemoveHook(hook.ID) })
	}
	// Polls before this operator starts are an earlier path's.
	st.before = e.counter.snapshot()
	st.op, err = startOperator(ctx, e.bin, e.dir, path, e.cluster.Kubeconfig, e.cfg.kubeconfigFlag, e.cfg.records, poll, webhookAddr)
	if err != nil {
		return nil, err
	}
	st.closers = append(st.closers, st.op.Stop)

	var stopPods func()
	st.pods, stopPods, err = watchPods(ctx, e.cluster, st.ns)
	if err != nil {
		return nil, err
	}
	st.closers = append(st.closers, stopPods)

	st.pool, err = createPool(ctx, e.cluster, st.ns, e.forgejoURL, e.cfg.maxRunners, webhook)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// close stops what startStage started, last first. The pool is left to deletePool, which needs
// the operator still running.
func (st *stage) close() {
	for i := len(st.closers) - 1; i >= 0; i-- {
		st.closers[i]()
	}
	st.closers = nil
}

// runPath runs one burst through path, then -singles single jobs, and deletes the pool
// afterwards, so that the next path starts from nothing.
func (e *env) runPath(ctx context.Context, path string) (res *results, err error) {
	st, err := e.startStage(ctx, path, e.cfg.poll, path == pathWebhook)
	if err != nil {
		return nil, err
	}
	defer st.close()
	offset, err := waitForPollPhase(ctx, e.counter, st.before.JobsPolls, e.cfg.poll, st.op)
	if err != nil {
		return nil, err
	}

	b := &burst{cfg: e.cfg, ns: st.ns, cluster: e.cluster, sim: e.sim, counter: e.counter, pods: st.pods, op: st.op, hookID: st.hookID}
	b.opStart, err = operatorStats(st.op)
	if err != nil {
		return nil, err
	}
	b.apiStart = e.counter.snapshot()
	queued, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: benchRepo, RunsOn: []string{"docker"}, Count: e.cfg.jobs})
	if err != nil {
		return nil, fmt.Errorf("queue %d jobs: %w", e.cfg.jobs, err)
	}
	b.queued = queued
	logf("%s path: queued %d jobs %s after the operator's last jobs poll", path, e.cfg.jobs, offset.Round(time.Millisecond))

	waitErr := b.wait(ctx)
	if waitErr == nil && e.cfg.singles > 0 {
		logf("%s path: burst done; %d single jobs follow, one at a time", path, e.cfg.singles)
		if err := b.runSingles(ctx, path); err != nil {
			waitErr = fmt.Errorf("single jobs: %w", err)
		}
	}
	res, err = b.results(path, offset)
	if err != nil {
		return nil, errors.Join(waitErr, err)
	}
	if waitErr != nil {
		logf("where it got to: %s", b.diagnose())
		logf("operator log: %s (%s)", st.op.LogPath, summarizeLog(st.op.LogPath))
		return res, waitErr
	}
	// While its operator still runs, to take the finalizer off.
	return res, deletePool(ctx, e.cluster, st.pool)
}

// createPool applies a global pool in ns with a Secret holding the simulator's admin token and the
// simulator hook's secret; with webhook, the pool's webhookSecretRef names the latter.
func createPool(ctx context.Context, c *cluster.Cluster, ns, forgejoURL string, maxRunners int, webhook bool) (*v1alpha1.RunnerPool, error) {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: poolName + "-token", Namespace: ns},
		StringData: map[string]string{"token": adminToken, "webhook": webhookSecret},
	}
	if err := c.Client.Create(ctx, secret); err != nil {
		return nil, fmt.Errorf("create the pool's Secret: %w", err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: poolName, Namespace: ns},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{
				URL: forgejoURL, Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name},
			},
			Labels:  []string{"docker:host"},
			Scaling: v1alpha1.Scaling{MaxRunners: int32(maxRunners)},
			History: v1alpha1.History{Limit: ptr.To[int32](10)},
		},
	}
	if webhook {
		pool.Spec.Forgejo.WebhookSecretRef = &v1alpha1.SecretKeySelector{Name: secret.Name, Key: "webhook"}
	}
	if err := c.Client.Create(ctx, pool); err != nil {
		return nil, fmt.Errorf("create RunnerPool %s/%s: %w", ns, poolName, err)
	}
	return pool, nil
}

// deletePool deletes pool and waits until it is gone, so that the next path's operator does not
// serve the next burst with it too.
func deletePool(ctx context.Context, c *cluster.Cluster, pool *v1alpha1.RunnerPool) error {
	if err := c.Client.Delete(ctx, pool); err != nil {
		return fmt.Errorf("delete RunnerPool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(pool), &v1alpha1.RunnerPool{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("wait for RunnerPool %s/%s to be gone: %w", pool.Namespace, pool.Name, err)
		case time.Now().After(deadline):
			return fmt.Errorf("RunnerPool %s/%s was not gone a minute after its deletion", pool.Namespace, pool.Name)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("wait for RunnerPool %s/%s to be gone: %w", pool.Namespace, pool.Name, err)
		}
	}
}

// waitForPollPhase waits for the operator's first jobs poll of the pool's connection (the first
// after polls jobs polls in all), then until
// half a poll interval after the latest one. A burst queued there waits half an interval for the
// next poll — the average over all moments it could arrive — so runs compare with each other.
// Returns how long after the latest poll it is.
func waitForPollPhase(ctx context.Context, counter *apiCounter, polls int, poll time.Duration, op *operatorproc.Process) (time.Duration, error) {
	if err := waitForFirstPoll(ctx, counter, polls, op); err != nil {
		return 0, err
	}
	last := counter.snapshot().LastJobsPoll
	if err := sleep(ctx, time.Until(last.Add(poll/2))); err != nil {
		return 0, fmt.Errorf("wait for the middle of a poll interval: %w", err)
	}
	return time.Since(counter.snapshot().LastJobsPoll), nil
}

// waitForFirstPoll waits for the first jobs poll after polls jobs polls in all: the operator
// has taken the pool's connection up, so a delivery now finds a connection to poll.
func waitForFirstPoll(ctx context.Context, counter *apiCounter, polls int, op *operatorproc.Process) error {
	deadline := time.Now().Add(time.Minute)
	for counter.snapshot().JobsPolls <= polls {
		if time.Now().After(deadline) {
			return fmt.Errorf("the operator did not list jobs within a minute of the pool's creation; see %s", op.LogPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the first jobs poll: %w", err)
		}
	}
	return nil
}

// burst is one queued burst of jobs and what is watched while it runs.
type burst struct {
	cfg     config
	ns      string
	cluster *cluster.Cluster
	sim     *forgejosim.Server
	counter *apiCounter
	pods    *podObserver
	op      *operatorproc.Process
	queued  []forgejosim.Job
	// hookID is the simulator's hook to the operator's receiver; 0 on the poll path.
	hookID int64
	// singles are the jobs queued one at a time after the burst, and singlesPolls the jobs polls
	// made from the first one's queueing until the last one's follow-up polls were over.
	singles      []forgejosim.Job
	singlesPolls int

	opStart, opEnd   procStats
	apiStart, apiEnd apiSnapshot
	gone             time.Time
}

// wait returns once every queued job is done and nothing of any runner is left: no Runner, no
// runner pod, no registration in Forgejo.
func (b *burst) wait(ctx context.Context) error {
	want := map[int64]bool{}
	for _, j := range b.queued {
		want[j.ID] = true
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	for {
		state := b.sim.State()
		done := 0
		for _, j := range state.Jobs {
			if want[j.ID] && j.Status.Done() {
				done++
			}
		}
		select {
		case <-progress.C:
			logf("%d of %d jobs done, %d runner pods seen, %d live, %d registrations", done, len(want),
				b.pods.created(), b.pods.live(), len(state.Runners))
		default:
		}
		if done == len(want) && len(state.Runners) == 0 {
			left, err := leftInCluster(ctx, b.cluster, b.ns)
			if err != nil {
				return err
			}
			if left == "" {
				b.gone = time.Now()
				// The pod watch may trail the direct reads above; let it see the last deletions.
				for i := 0; i < 40 && b.pods.live() > 0; i++ {
					if err := sleep(ctx, 50*time.Millisecond); err != nil {
						break
					}
				}
				// Read before anything stops, so that teardown is not counted.
				b.apiEnd = b.counter.snapshot()
				st, err := operatorStats(b.op)
				if err != nil {
					return err
				}
				b.opEnd = st
				return nil
			}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for %d jobs to be done (%d are) and every runner gone: %w", len(want), done, err)
		}
	}
}

// leftInCluster describes the Runners, runner pods and runner token Secrets left; "" when none.
func leftInCluster(ctx context.Context, c *cluster.Cluster, ns string) (string, error) {
	var runners v1alpha1.RunnerList
	if err := c.Client.List(ctx, &runners, client.InNamespace(ns)); err != nil {
		return "", fmt.Errorf("list Runners: %w", err)
	}
	appLabel := client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName}
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(ns), appLabel); err != nil {
		return "", fmt.Errorf("list runner pods: %w", err)
	}
	var secrets corev1.SecretList
	if err := c.Client.List(ctx, &secrets, client.InNamespace(ns), appLabel); err != nil {
		return "", fmt.Errorf("list runner Secrets: %w", err)
	}
	if len(runners.Items)+len(pods.Items)+len(secrets.Items) == 0 {
		return "", nil
	}
	return fmt.Sprintf("%d Runners, %d pods, %d token Secrets", len(runners.Items), len(pods.Items), len(secrets.Items)), nil
}

// diagnose says where an unfinished burst and its single jobs stand, for the report of a stuck
// run.
func (b *burst) diagnose() string {
	return diagnose(b.sim, b.cluster, b.ns, append(slices.Clone(b.queued), b.singles...))
}

// diagnose says where the jobs queued stand and what of their runners is left in ns.
func diagnose(sim *forgejosim.Server, c *cluster.Cluster, ns string, queued []forgejosim.Job) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state := sim.State()
	mine := map[int64]bool{}
	for _, j := range queued {
		mine[j.ID] = true
	}
	jobs := map[string]int{}
	for _, j := range state.Jobs {
		if mine[j.ID] {
			jobs[string(j.Status)]++
		}
	}
	parts := []string{"jobs " + countsString(jobs), fmt.Sprintf("%d registrations", len(state.Runners))}
	var runners v1alpha1.RunnerList
	if err := c.Client.List(ctx, &runners, client.InNamespace(ns)); err == nil {
		phases := map[string]int{}
		for _, r := range runners.Items {
			phases[string(r.Status.Phase)]++
		}
		parts = append(parts, fmt.Sprintf("%d Runners %s", len(runners.Items), countsString(phases)))
	}
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(ns),
		client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName}); err == nil {
		phases := map[string]int{}
		for _, p := range pods.Items {
			phases[string(p.Status.Phase)]++
		}
		parts = append(parts, fmt.Sprintf("%d pods %s", len(pods.Items), countsString(phases)))
	}
	return strings.Join(parts, "; ")
}

func countsString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
