// Command dev runs the project locally: a simulated Kubernetes cluster (real kube-apiserver,
// etcd, kube-controller-manager, kube-scheduler, and kwok for fake nodes) with the project's
// CRDs, the Forgejo simulator, the operator built from this checkout, and the sample pools with
// the token Secrets they name. It prints the KUBECONFIG to use and stays up until interrupted.
// `make dev` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/runnerplay"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "dev: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	dir         string
	nodes       int
	webhookPort int
	forgejoAddr string
	metricsAddr string
}

func run(args []string) error {
	var cfg config
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.StringVar(&cfg.dir, "dir", "", "Directory for the kubeconfig and logs (default: .dev in the repository).")
	fs.IntVar(&cfg.nodes, "nodes", 2, "Number of fake nodes.")
	fs.IntVar(&cfg.webhookPort, "webhook-port", 19000, "Port of the operator's webhook receiver; the simulator's hook points at it.")
	fs.StringVar(&cfg.forgejoAddr, "forgejo-addr", "127.0.0.1:3000", "Address of the Forgejo simulator; the samples point at 127.0.0.1:3000.")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", "127.0.0.1:18080", "Address the operator serves /metrics on, over plain HTTP; \"0\" serves none.")
	if err := fs.Parse(args); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("dev: starting the simulated cluster (the first run builds Kubernetes; that takes a while)")
	env, err := up(ctx, cfg)
	if err != nil {
		return err
	}
	defer env.down()

	fmt.Printf(`
dev: ready.
  export KUBECONFIG=%s
  kubectl get runnerpools,runners,pods
  Forgejo simulator: %s (admin token %q; control API under /_sim/)
  operator log: %s
  runner event log: %s
  audit log: %s (check it: go run ./cmd/forgejo-runner-operator audit verify %s)
  metrics: curl -s http://%s/metrics | grep ^forgejo_runner_operator_
Queue three jobs for the trusted-dind pool and watch each get its own runner pod:
  curl -s -H 'Authorization: token %s' -d '{"repo":"acme/app","runs_on":["docker"],"count":3}' %s/_sim/jobs
dev: press Ctrl-C to stop
`, env.cluster.Kubeconfig, env.forgejoURL, devAdminToken, env.operatorLog, env.eventLog, env.auditLog, env.auditLog, cfg.metricsAddr,
		devAdminToken, env.forgejoURL)
	<-ctx.Done()
	fmt.Println("dev: stopping")
	return nil
}

// devEnv is everything `make dev` runs.
type devEnv struct {
	cluster     *cluster.Cluster
	forgejo     *forgejoSim
	forgejoURL  string
	operator    *operatorproc.Process
	operatorLog string
	eventLog    string
	auditLog    string
	metricsAddr string
	stopPlayer  func()
}

// up starts the cluster, the simulator and the operator, and applies the samples. On error,
// whatever was started is stopped again.
func up(ctx context.Context, cfg config) (env *devEnv, err error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	if cfg.dir == "" {
		cfg.dir = filepath.Join(root, ".dev")
	}
	if err := os.RemoveAll(cfg.dir); err != nil {
		return nil, fmt.Errorf("clear %s: %w", cfg.dir, err)
	}
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("make %s: %w", cfg.dir, err)
	}
	env = &devEnv{
		operatorLog: filepath.Join(cfg.dir, "operator.log"),
		eventLog:    filepath.Join(cfg.dir, "events.jsonl"),
		auditLog:    filepath.Join(cfg.dir, "audit.jsonl"),
	}
	defer func() {
		if err != nil {
			env.down()
		}
	}()

	env.cluster, err = cluster.Start(ctx, cluster.Options{Nodes: cfg.nodes, Dir: filepath.Join(cfg.dir, "cluster"), KeepDir: true})
	if err != nil {
		return env, err
	}
	env.forgejo, env.forgejoURL, err = startForgejo(cfg.forgejoAddr)
	if err != nil {
		return env, err
	}
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", cfg.webhookPort)
	if err := seedSamples(ctx, env.cluster, env.forgejo.server, root, "http://"+webhookAddr+"/webhook/forgejo"); err != nil {
		return env, err
	}
	if cfg.metricsAddr == "" {
		cfg.metricsAddr = "0"
	}
	env.metricsAddr = cfg.metricsAddr
	env.operator, err = startOperator(ctx, root, cfg.dir, env.cluster.Kubeconfig, webhookAddr,
		"--metrics-bind-address="+cfg.metricsAddr, "--metrics-secure=false",
		"--event-log-path="+env.eventLog, "--audit-log-path="+env.auditLog)
	if err != nil {
		return env, err
	}
	// kwok runs no containers: play each runner pod's process with the simulated runner.
	playCtx, stopPlaying := context.WithCancel(context.Background())
	player := &runnerplay.Player{Cluster: env.cluster, TaskDuration: 2 * time.Second}
	played := make(chan struct{})
	go func() {
		defer close(played)
		player.Run(playCtx)
	}()
	env.stopPlayer = func() {
		stopPlaying()
		<-played
	}
	return env, nil
}

func (e *devEnv) down() {
	if e.stopPlayer != nil {
		e.stopPlayer()
	}
	if e.operator != nil {
		e.operator.Stop()
	}
	if e.forgejo != nil {
		e.forgejo.close()
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "dev: stop cluster: %v\n", err)
		}
	}
}

// startOperator builds the operator from this checkout and runs it against the cluster the way
// it runs in one: leader election on, JSON logs, probes served.
func startOperator(ctx context.Context, root, dir, kubeconfig, webhookAddr string, extraArgs ...string) (*operatorproc.Process, error) {
	bin, err := operatorproc.Build(ctx, root, dir)
	if err != nil {
		return nil, err
	}
	return operatorproc.Start(ctx, bin, operatorproc.Options{
		Args: append([]string{
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=true",
			"--leader-election-namespace=default",
			"--webhook-bind-address=" + webhookAddr,
		}, extraArgs...),
		LogPath: filepath.Join(dir, "operator.log"),
	})
}
