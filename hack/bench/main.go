// Command bench measures the operator under a burst of waiting jobs and prints figures; it is a
// program, not a timed test, so it never fails on a slow machine (DESIGN.md §6). It starts a
// simulated cluster, the Forgejo simulator behind a request counter, the operator built from
// this checkout as a subprocess (so its CPU time and peak memory are its own), and the runner
// player. Then, for each of -paths in turn, it starts a fresh operator and creates a global pool in
// a namespace of its own.
//
// The poll and webhook paths queue -jobs jobs at once, each its own run as a push makes it, and
// time each job through queued → runner pod created → pod Running → job picked → job done, until
// every runner is gone; then, with -singles, they queue one job at a time to time a job that has
// the operator to itself. The poll path has the operator learn of jobs only by polling. The
// webhook path is Forgejo 15's: Forgejo sends no webhook per job, only a signed push delivery per
// run (the simulator's default), which the operator's receiver takes as a cue to poll at once, so
// "queued" there is the push's creation.
//
// The chain path has an operator that polls only every 10 minutes and runs -chains runs of three
// jobs, build → test → deploy, tied by needs:. Forgejo 15 says nothing when a need is met, so what
// moves a chain along is the operator's poll when a runner ends; the 10-minute interval makes a
// missed one plain to see.
//
// The scale path, run only when -paths names it (and last), measures the operator at rest with
// many pools rather than a burst: -pools pools in one namespace, one global and the rest on a few
// organizations, whose minIdle keep -runners warm runners together. At a quarter, half and all of
// that, once every runner is Idle, it measures over -window the operator's RSS, CPU seconds per
// minute, reconciles per second (from its metrics endpoint) and Forgejo calls per poll interval,
// then fits a line to RSS against runners and projects it to 10,000 runners.
//
// The soak path, run only when -paths names it alone, keeps runs coming for -soak (single jobs,
// pairs, build → test → deploy chains) into three repositories covered by three pools whose
// scopes overlap: global, an organization, a repository. Polls every 2 s race push deliveries,
// some of them sent before their run is listed, and the operator is restarted every
// -soak-restart, by SIGKILL and SIGTERM in turn. Once everything has settled it checks the books:
// every job ran once and succeeded, no job had two Runners, runners made == jobs ==
// registrations made, each repository's jobs went to the narrowest pool, and nothing is left in
// Forgejo or the cluster. It exits 1 when they do not balance.
//
// The figures of the paths are printed one after the other and then side by side.
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
	pathChain   = "chain"
	// pathScale keeps many pools' warm runners up and measures the operator's steady cost; it
	// is not among the defaults, and comes last when named (its pools are left to the teardown).
	pathScale = "scale"
	// pathSoak keeps jobs coming through three overlapping pools for -soak while the operator
	// restarts, then checks the books; it runs alone (its simulator races deliveries).
	pathSoak = "soak"
)

// knownPaths are the paths in the order -paths runs them by default.
var knownPaths = []string{pathPoll, pathWebhook, pathChain}

// allPaths are every path -paths takes.
var allPaths = append(slices.Clone(knownPaths), pathScale, pathSoak)

type config struct {
	paths      []string
	jobs       int
	poll       time.Duration
	task       time.Duration
	nodes      int
	maxRunners int
	singles    int
	chains     int
	pools      int
	runners    int
	window     time.Duration
	soak       time.Duration
	// soakRestart is how often the soak path restarts the operator.
	soakRestart time.Duration
	timeout     time.Duration
	jsonOut     bool
	dir         string
	keep        bool

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
	fs.StringVar(&paths, "paths", strings.Join(knownPaths, ","), "Comma-separated paths to run, in order: "+
		pathPoll+" (a burst the operator learns of only by polling), "+
		pathWebhook+" (a burst with Forgejo 15's push delivery per run) and "+
		pathChain+" (build → test → deploy runs tied by needs:, polling every 10m); "+
		pathScale+" (not a default: -pools pools keeping -runners warm runners, at a quarter, half and all of them) must come last; "+
		pathSoak+" (not a default, runs alone: runs for -soak through three overlapping pools, webhooks racing polls, the operator restarted every -soak-restart, then the books checked).")
	fs.IntVar(&cfg.jobs, "jobs", 100, "Jobs queued at once by the poll and webhook paths.")
	fs.IntVar(&cfg.singles, "singles", 5, "After each burst, queue one job at a time this many times, each once the previous one's pod is gone (0: none).")
	fs.IntVar(&cfg.chains, "chains", 3, "Runs of three chained jobs the chain path queues, one after the other.")
	fs.IntVar(&cfg.pools, "pools", defaultScalePools, "RunnerPools the scale path creates at its largest size (1 global, the rest on a few organizations).")
	fs.IntVar(&cfg.runners, "runners", defaultScaleRunners, "Warm (Idle) runners the scale path's pools keep together at its largest size.")
	fs.DurationVar(&cfg.window, "window", time.Minute, "How long the scale path measures at each size once every runner is Idle.")
	fs.DurationVar(&cfg.soak, "soak", 30*time.Minute, "How long the soak path queues runs.")
	fs.DurationVar(&cfg.soakRestart, "soak-restart", 5*time.Minute, "How often the soak path restarts the operator (by SIGKILL and SIGTERM in turn).")
	fs.DurationVar(&cfg.poll, "poll", 10*time.Second, "The operator's --poll-interval on the poll and webhook paths (at least 1s, as the operator requires); the chain path's is always "+chainPoll.String()+".")
	fs.DurationVar(&cfg.task, "task", 100*time.Millisecond, "How long each simulated job runs.")
	fs.IntVar(&cfg.nodes, "nodes", 2, "Fake nodes in the simulated cluster.")
	fs.IntVar(&cfg.maxRunners, "max-runners", 0, "The pool's spec.scaling.maxRunners (default: -jobs, so no job waits for a slot).")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "Bound on the whole run, cluster start included (with -paths soak, the default is -soak + 15m).")
	fs.BoolVar(&cfg.jsonOut, "json", false, "Print the figures as JSON instead of a table.")
	fs.StringVar(&cfg.dir, "dir", "", "Directory for the operator binary, its log and the cluster logs (default: a temporary one).")
	fs.BoolVar(&cfg.kubeconfigFlag, "kubeconfig-flag", false, "Give the operator --kubeconfig, as make dev does, instead of $KUBECONFIG; its Kubernetes client is then limited to 5 requests/s.")
	fs.StringVar(&cfg.operatorBin, "operator", "", "Run this operator binary instead of building ./cmd/forgejo-runner-operator (to compare versions).")
	fs.BoolVar(&cfg.records, "records", true, "Run the operator with its event log and audit log (in -dir), as config/records does.")
	fs.BoolVar(&cfg.keep, "keep", false, "Keep -dir afterwards (it is always kept when the run fails).")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	for _, p := range strings.Split(paths, ",") {
		switch {
		case !slices.Contains(allPaths, p):
			errs = append(errs, fmt.Errorf("-paths: unknown path %q (want some of %s)", p, strings.Join(allPaths, ", ")))
		case slices.Contains(cfg.paths, p):
			errs = append(errs, fmt.Errorf("-paths: %s named twice", p))
		default:
			cfg.paths = append(cfg.paths, p)
		}
	}
	if i := slices.Index(cfg.paths, pathScale); i >= 0 {
		if i != len(cfg.paths)-1 {
			errs = append(errs, fmt.Errorf("-paths: %s must come last", pathScale))
		}
		if cfg.pools < 1 || cfg.pools > 500 {
			errs = append(errs, fmt.Errorf("-pools must be within 1..500, got %d", cfg.pools))
		}
		if cfg.runners < cfg.pools || cfg.runners > 10000 {
			errs = append(errs, fmt.Errorf("-runners must be within -pools (%d, a warm runner a pool)..10000, got %d", cfg.pools, cfg.runners))
		}
		if cfg.window < 10*time.Second {
			errs = append(errs, fmt.Errorf("-window must be at least 10s, got %s", cfg.window))
		}
	}
	if slices.Contains(cfg.paths, pathSoak) {
		if len(cfg.paths) > 1 {
			errs = append(errs, fmt.Errorf("-paths: %s runs alone", pathSoak))
		}
		if cfg.soak < time.Minute {
			errs = append(errs, fmt.Errorf("-soak must be at least 1m, got %s", cfg.soak))
		}
		if cfg.soakRestart < 30*time.Second {
			errs = append(errs, fmt.Errorf("-soak-restart must be at least 30s, got %s", cfg.soakRestart))
		}
		if !timeoutSet {
			// Room for the cluster, the settling and the teardown.
			cfg.timeout = cfg.soak + soakSettle + 5*time.Minute
		}
	}
	if cfg.jobs < 1 || cfg.jobs > 10000 {
		errs = append(errs, fmt.Errorf("-jobs must be within 1..10000 (the simulator's limit), got %d", cfg.jobs))
	}
	if cfg.singles < 0 || cfg.singles > 1000 {
		errs = append(errs, fmt.Errorf("-singles must be within 0..1000, got %d", cfg.singles))
	}
	if slices.Contains(cfg.paths, pathChain) && (cfg.chains < 1 || cfg.chains > 1000) {
		errs = append(errs, fmt.Errorf("-chains must be within 1..1000 when -paths has %s, got %d", pathChain, cfg.chains))
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

	all, sc, err := run(ctx, cfg)
	if len(all) > 0 {
		if perr := printResults(os.Stdout, all, cfg.jsonOut); perr != nil {
			fmt.Fprintf(os.Stderr, "bench: print figures: %v\n", perr)
		}
	}
	if sc != nil {
		if perr := printScale(os.Stdout, sc, cfg.jsonOut); perr != nil {
			fmt.Fprintf(os.Stderr, "bench: print scale figures: %v\n", perr)
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
