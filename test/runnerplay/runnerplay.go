// Package runnerplay plays the runner process inside runner pods of a simulated cluster, where
// kwok runs no containers: when a runner pod goes Running it reads the pod's arguments and
// token Secret, runs the simulated forgejo-runner (internal/simrunner) against Forgejo with
// them, and ends the pod with the simulated runner's exit code, as the kubelet would.
package runnerplay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/simrunner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// Player watches a cluster's runner pods and plays their runner process.
type Player struct {
	Cluster *cluster.Cluster
	// TaskDuration is how long each simulated job runs.
	TaskDuration time.Duration
	// Logf reports what the player does; nil is silent.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	playing map[string]context.CancelFunc // by namespace/name
	wg      sync.WaitGroup
}

// Run plays pods until ctx ends, then waits for the runs it started.
func (p *Player) Run(ctx context.Context) {
	p.playing = map[string]context.CancelFunc{}
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			p.wg.Wait()
			return
		case <-ticker.C:
		}
		var pods corev1.PodList
		if err := p.Cluster.Client.List(ctx, &pods, client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName}); err != nil {
			continue
		}
		present := map[string]bool{}
		for i := range pods.Items {
			pod := &pods.Items[i]
			key := pod.Namespace + "/" + pod.Name + "/" + string(pod.UID)
			present[key] = true
			if pod.Status.Phase != corev1.PodRunning || !pod.DeletionTimestamp.IsZero() {
				continue
			}
			p.mu.Lock()
			_, started := p.playing[key]
			if !started {
				runCtx, cancel := context.WithCancel(ctx)
				p.playing[key] = cancel
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					p.play(runCtx, pod.DeepCopy())
				}()
			}
			p.mu.Unlock()
		}
		// A deleted pod's process gets SIGTERM: cancel its run.
		p.mu.Lock()
		for key, cancel := range p.playing {
			if !present[key] {
				cancel()
			}
		}
		p.mu.Unlock()
	}
}

func (p *Player) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

func (p *Player) play(ctx context.Context, pod *corev1.Pod) {
	code, err := p.runProcess(ctx, pod)
	if err != nil {
		p.logf("runnerplay: pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	if ctx.Err() != nil {
		return // the pod is gone
	}
	if err := p.Cluster.TerminatePod(context.Background(), client.ObjectKeyFromObject(pod), int32(code)); err != nil {
		p.logf("runnerplay: end pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (p *Player) runProcess(ctx context.Context, pod *corev1.Pod) (int, error) {
	args, err := runnerpod.ParseRunnerArgs(pod)
	if err != nil {
		return simrunner.ExitError, fmt.Errorf("read runner arguments: %w", err)
	}
	var secret corev1.Secret
	if err := p.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: args.TokenSecretName}, &secret); err != nil {
		return simrunner.ExitError, fmt.Errorf("read token Secret: %w", err)
	}
	dir, err := os.MkdirTemp("", "runnerplay-")
	if err != nil {
		return simrunner.ExitError, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, secret.Data[args.TokenSecretKey], 0o600); err != nil {
		return simrunner.ExitError, err
	}
	out, err := simrunner.Run(ctx, simrunner.Config{
		URL:          args.URL,
		UUID:         args.UUID,
		TokenURL:     "file:" + tokenFile,
		Labels:       args.Labels,
		Handle:       args.Handle,
		Wait:         args.Wait,
		TaskDuration: p.TaskDuration,
	})
	p.logf("runnerplay: pod %s/%s exited %d (task %d)", pod.Namespace, pod.Name, out.ExitCode, out.TaskID)
	return out.ExitCode, err
}
