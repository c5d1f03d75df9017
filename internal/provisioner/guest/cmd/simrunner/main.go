// Command simrunner is the simulated `forgejo-runner one-job` (internal/simrunner) as a program,
// for test guests: the guest init starts it exactly as it would start the real runner.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/simrunner"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "one-job" {
		fmt.Fprintln(os.Stderr, "usage: forgejo-runner one-job --url … --uuid … --token-url file:…")
		os.Exit(simrunner.ExitError)
	}
	cfg, err := simrunner.ParseArgs(os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(simrunner.ExitError)
	}
	cfg.TaskDuration = taskDuration()
	cfg.PollInterval = 500 * time.Millisecond
	cfg.Logf = func(format string, args ...any) { fmt.Printf(format+"\n", args...) } //nolint:forbidigo // the runner's log is its stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	out, err := simrunner.Run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	fmt.Printf("simrunner: exit %d task %d result %s\n", out.ExitCode, out.TaskID, out.Result) //nolint:forbidigo // the runner's log is its stdout
	os.Exit(out.ExitCode)
}

// taskDuration is how long each simulated task takes: a second, or frp.sim_task on the kernel
// command line (a Go duration), for tests that need a job still running a while later.
func taskDuration() time.Duration {
	data, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(data)) {
		if v, ok := strings.CutPrefix(f, "frp.sim_task="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				return d
			}
		}
	}
	return time.Second
}
