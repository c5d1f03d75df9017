package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/runnerplay"
)

const (
	namespace  = "default"
	poolName   = "bench"
	adminToken = "bench-admin-token"
)

// run sets everything up, runs one burst and tears everything down again. Figures are returned
// even when the burst did not finish, so that a stuck run still shows how far it got.
func run(ctx context.Context, cfg config) (res *results, err error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("find the repository: %w", err)
	}
	dir := cfg.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bench-"); err != nil {
			return nil, fmt.Errorf("make work directory: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make work directory: %w", err)
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

	bin := cfg.operatorBin
	if bin == "" {
		// Built before the cluster starts, so the compiler does not compete with it.
		logf("building the operator")
		if bin, err = buildOperator(ctx, root, dir); err != nil {
			return nil, err
		}
	}
	logf("starting the simulated cluster (%d nodes)", cfg.nodes)
	c, err := cluster.Start(ctx, cluster.Options{Nodes: cfg.nodes, Dir: filepath.Join(dir, "cluster"), KeepDir: true})
	if err != nil {
		return nil, fmt.Errorf("start the simulated cluster: %w", err)
	}
	cleanups = append(cleanups, func() {
		if err := c.Stop(); err != nil {
			logf("stop the cluster: %v", err)
		}
	})

	counter := newAPICounter()
	sim, forgejoURL, closeSim, err := startForgejo(counter)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, closeSim)

	op, err := startOperator(ctx, bin, dir, c.Kubeconfig, cfg.kubeconfigFlag, cfg.poll)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, op.stop)

	pods, stopPods, err := watchPods(ctx, c)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, stopPods)

	playCtx, stopPlaying := context.WithCancel(context.Background())
	player := &runnerplay.Player{Cluster: c, TaskDuration: cfg.task}
	played := make(chan struct{})
	go func() {
		defer close(played)
		player.Run(playCtx)
	}()
	cleanups = append(cleanups, func() {
		stopPlaying()
		<-played
	})

	if err := createPool(ctx, c, forgejoURL, cfg.maxRunners); err != nil {
		return nil, err
	}
	offset, err := waitForPollPhase(ctx, counter, cfg.poll, op)
	if err != nil {
		return nil, err
	}

	b := &burst{cfg: cfg, cluster: c, sim: sim, counter: counter, pods: pods, op: op}
	b.opStart, err = op.stats()
	if err != nil {
		return nil, err
	}
	b.apiStart = counter.snapshot()
	queued, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: cfg.jobs})
	if err != nil {
		return nil, fmt.Errorf("queue %d jobs: %w", cfg.jobs, err)
	}
	b.queued = queued
	logf("queued %d jobs %s after the operator's last jobs poll", cfg.jobs, offset.Round(time.Millisecond))

	waitErr := b.wait(ctx)
	res, err = b.results(offset)
	if err != nil {
		return nil, errors.Join(waitErr, err)
	}
	if waitErr != nil {
		logf("where it got to: %s", b.diagnose())
		logf("operator log: %s (%s)", op.logPath, summarizeLog(op.logPath))
		return res, waitErr
	}
	return res, nil
}

// createPool applies a global pool whose token Secret holds the simulator's admin token.
func createPool(ctx context.Context, c *cluster.Cluster, forgejoURL string, maxRunners int) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: poolName + "-token", Namespace: namespace},
		StringData: map[string]string{"token": adminToken},
	}
	if err := c.Client.Create(ctx, secret); err != nil {
		return fmt.Errorf("create the pool's token Secret: %w", err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: poolName, Namespace: namespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{
				URL: forgejoURL, Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name},
			},
			Labels:  []string{"docker:docker://node:22-bookworm"},
			Scaling: v1alpha1.Scaling{MaxRunners: int32(maxRunners)},
			History: v1alpha1.History{Limit: ptr.To[int32](10)},
		},
	}
	if err := c.Client.Create(ctx, pool); err != nil {
		return fmt.Errorf("create RunnerPool %s: %w", poolName, err)
	}
	return nil
}

// waitForPollPhase waits for the operator's first jobs poll of the pool's connection, then until
// half a poll interval after the latest one. A burst queued there waits half an interval for the
// next poll — the average over all moments it could arrive — so runs compare with each other.
// Returns how long after the latest poll it is.
func waitForPollPhase(ctx context.Context, counter *apiCounter, poll time.Duration, op *operatorProcess) (time.Duration, error) {
	deadline := time.Now().Add(time.Minute)
	for counter.snapshot().JobsPolls == 0 {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the operator did not list jobs within a minute of the pool's creation; see %s", op.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return 0, fmt.Errorf("wait for the first jobs poll: %w", err)
		}
	}
	last := counter.snapshot().LastJobsPoll
	if err := sleep(ctx, time.Until(last.Add(poll/2))); err != nil {
		return 0, fmt.Errorf("wait for the middle of a poll interval: %w", err)
	}
	return time.Since(counter.snapshot().LastJobsPoll), nil
}

// burst is one queued burst of jobs and what is watched while it runs.
type burst struct {
	cfg     config
	cluster *cluster.Cluster
	sim     *forgejosim.Server
	counter *apiCounter
	pods    *podObserver
	op      *operatorProcess
	queued  []forgejosim.Job

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
			left, err := b.leftInCluster(ctx)
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
				st, err := b.op.stats()
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
func (b *burst) leftInCluster(ctx context.Context) (string, error) {
	var runners v1alpha1.RunnerList
	if err := b.cluster.Client.List(ctx, &runners, client.InNamespace(namespace)); err != nil {
		return "", fmt.Errorf("list Runners: %w", err)
	}
	appLabel := client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName}
	var pods corev1.PodList
	if err := b.cluster.Client.List(ctx, &pods, client.InNamespace(namespace), appLabel); err != nil {
		return "", fmt.Errorf("list runner pods: %w", err)
	}
	var secrets corev1.SecretList
	if err := b.cluster.Client.List(ctx, &secrets, client.InNamespace(namespace), appLabel); err != nil {
		return "", fmt.Errorf("list runner Secrets: %w", err)
	}
	if len(runners.Items)+len(pods.Items)+len(secrets.Items) == 0 {
		return "", nil
	}
	return fmt.Sprintf("%d Runners, %d pods, %d token Secrets", len(runners.Items), len(pods.Items), len(secrets.Items)), nil
}

// diagnose says where an unfinished burst stands, for the report of a stuck run.
func (b *burst) diagnose() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state := b.sim.State()
	mine := map[int64]bool{}
	for _, j := range b.queued {
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
	if err := b.cluster.Client.List(ctx, &runners, client.InNamespace(namespace)); err == nil {
		phases := map[string]int{}
		for _, r := range runners.Items {
			phases[string(r.Status.Phase)]++
		}
		parts = append(parts, fmt.Sprintf("%d Runners %s", len(runners.Items), countsString(phases)))
	}
	var pods corev1.PodList
	if err := b.cluster.Client.List(ctx, &pods, client.InNamespace(namespace),
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
