// Command bench measures the operator under a burst of waiting jobs and prints figures; it is a
// program, not a timed test, so it never fails on a slow machine (DESIGN.md §6). It starts a
// simulated cluster, the Forgejo simulator behind a request counter, the operator built from
// this checkout as a subprocess (so its CPU time and peak memory are its own), and the runner
// player. Then, for each of -paths in turn, it starts a fresh operator, creates a global pool in a
// namespace of its own, queues -jobs jobs at once, and times each job through queued → runner pod
// created → pod Running → job picked → job done, until every runner is gone and the pool deleted.
// The poll path has the operator learn of jobs only by polling; the webhook path also has the
// simulator deliver signed job events to the operator's webhook receiver. The figures of the
// paths are printed one after the other and then side by side.
// `make bench` runs it; BENCH_ARGS passes flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The paths by which jobs can reach the operator; -paths picks them.
const (
	pathPoll    = "poll"
	pathWebhook = "webhook"
)

type config struct {
	paths      []string
	jobs       int
	poll       time.Duration
	task       time.Duration
	nodes      int
	maxRunners int
	timeout    time.Duration
	jsonOut    bool
	dir        string
	keep       bool

	kubeconfigFlag bool
	operatorBin    string
	records        bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	os.Exit(benchMain(cfg))
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var paths string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&paths, "paths", pathPoll+","+pathWebhook, "Comma-separated paths to run a burst through, in order: "+
		pathPoll+" (the operator only polls) and "+pathWebhook+" (Forgejo also sends job webhooks).")
	fs.IntVar(&cfg.jobs, "jobs", 100, "Jobs queued at once.")
	fs.DurationVar(&cfg.poll, "poll", 10*time.Second, "The operator's --poll-interval (at least 1s, as the operator requires).")
	fs.DurationVar(&cfg.task, "task", 100*time.Millisecond, "How long each simulated job runs.")
	fs.IntVar(&cfg.nodes, "nodes", 2, "Fake nodes in the simulated cluster.")
	fs.IntVar(&cfg.maxRunners, "max-runners", 0, "The pool's spec.scaling.maxRunners (default: -jobs, so no job waits for a slot).")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "Bound on the whole run, cluster start included.")
	fs.BoolVar(&cfg.jsonOut, "json", false, "Print the figures as JSON instead of a table.")
	fs.StringVar(&cfg.dir, "dir", "", "Directory for the operator binary, its log and the cluster logs (default: a temporary one).")
	fs.BoolVar(&cfg.kubeconfigFlag, "kubeconfig-flag", false, "Give the operator --kubeconfig, as make dev does, instead of $KUBECONFIG; its Kubernetes client is then limited to 5 requests/s.")
	fs.StringVar(&cfg.operatorBin, "operator", "", "Run this operator binary instead of building ./cmd/forgejo-runner-operator (to compare versions).")
	fs.BoolVar(&cfg.records, "records", true, "Run the operator with its event log and audit log (in -dir), as config/records does.")
	fs.BoolVar(&cfg.keep, "keep", false, "Keep -dir afterwards (it is always kept when the run fails).")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	for _, p := range strings.Split(paths, ",") {
		switch {
		case p != pathPoll && p != pathWebhook:
			errs = append(errs, fmt.Errorf("-paths: unknown path %q (want %s or %s)", p, pathPoll, pathWebhook))
		case slices.Contains(cfg.paths, p):
			errs = append(errs, fmt.Errorf("-paths: %s named twice", p))
		default:
			cfg.paths = append(cfg.paths, p)
		}
	}
	if cfg.jobs < 1 || cfg.jobs > 10000 {
		errs = append(errs, fmt.Errorf("-jobs must be within 1..10000 (the simulator's limit), got %d", cfg.jobs))
	}
	if cfg.poll < time.Second {
		errs = append(errs, fmt.Errorf("-poll must be at least 1s, got %s", cfg.poll))
	}
	if cfg.task < 0 {
		errs = append(errs, fmt.Errorf("-task must not be negative, got %s", cfg.task))
	}
	if cfg.nodes < 1 {
		errs = append(errs, fmt.Errorf("-nodes must be at least 1, got %d", cfg.nodes))
	}
	if cfg.maxRunners == 0 {
		cfg.maxRunners = cfg.jobs
	}
	if cfg.maxRunners < 1 || cfg.maxRunners > 10000 {
		errs = append(errs, fmt.Errorf("-max-runners must be within 1..10000, got %d", cfg.maxRunners))
	}
	if cfg.timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout must be positive, got %s", cfg.timeout))
	}
	return cfg, errors.Join(errs...)
}

func benchMain(cfg config) int {
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(sigCtx, cfg.timeout)
	defer cancel()
	go func() {
		// After the first Ctrl-C, a second one should kill at once rather than wait for cleanup.
		<-sigCtx.Done()
		stopSignals()
	}()

	all, err := run(ctx, cfg)
	if len(all) > 0 {
		if perr := printResults(os.Stdout, all, cfg.jsonOut); perr != nil {
			fmt.Fprintf(os.Stderr, "bench: print figures: %v\n", perr)
		}
	}
	if err != nil {
		switch {
		case sigCtx.Err() != nil:
			fmt.Fprintln(os.Stderr, "bench: interrupted")
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			fmt.Fprintf(os.Stderr, "bench: did not finish within -timeout %s: %v\n", cfg.timeout, err)
		default:
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		}
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
