// Command simrunner is the simulated `forgejo-runner one-job` (internal/simrunner) as a program,
// for test guests: the guest init starts it exactly as it would start the real runner.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
	cfg.TaskDuration = time.Second
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
