package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
)

// TestRecordsSurviveAnOperatorCrash kills the operator binary with SIGKILL in the middle of a
// burst, twice, and starts it again each time: no transition may be missing from the event
// log or written twice, the audit log must verify across the crashes (a line the kill cut
// short is recovered and recorded as such), and every registration created is on record as
// deleted.
func TestRecordsSurviveAnOperatorCrash(t *testing.T) {
	w := startWorld(t)
	w.stopOperator() // this test runs the binary instead
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, err := operatorproc.Build(t.Context(), root, dir)
	if err != nil {
		t.Fatal(err)
	}
	eventPath, auditPath := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "audit.jsonl")
	start := func(n int) *operatorproc.Process {
		p, err := operatorproc.Start(t.Context(), bin, operatorproc.Options{
			Args: []string{
				"--leader-elect=false", // a killed leader's lease would hold up the next one
				"--metrics-bind-address=0",
				"--webhook-bind-address=0",
				"--poll-interval=1s",
				"--gc-interval=2s",
				"--operator-identity=forgejo-runner-operator (crash test)",
				"--event-log-path=" + eventPath,
				"--audit-log-path=" + auditPath,
			},
			Env:     []string{"KUBECONFIG=" + w.cluster.Kubeconfig},
			LogPath: filepath.Join(dir, fmt.Sprintf("operator-%d.log", n)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	kill := func(p *operatorproc.Process) {
		if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually.True(t, 30*time.Second, "the operator to die", func() (bool, string) {
			exited, _ := p.Exited()
			return exited, "still running"
		})
	}

	const pool, n = "crashed", 24
	w.createPool(t, pool, func(p *v1alpha1.RunnerPool) { p.Spec.Scaling.MaxRunners = 30 })
	queued, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: n})
	if err != nil {
		t.Fatal(err)
	}
	op := start(1)
	for crash, after := range []int{4, 12} {
		eventually.True(t, time.Minute, "the burst under way", func() (bool, string) {
			events, _ := os.ReadFile(eventPath)
			k := strings.Count(string(events), `"to":"Deleted"`)
			return k >= after, fmt.Sprintf("%d runners retired", k)
		})
		kill(op)
		op = start(crash + 2)
	}
	eventually.True(t, 3*time.Minute, "every job to succeed", w.allSucceeded(queued))
	eventually.True(t, 2*time.Minute, "nothing left, orphans collected", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, pool)
		return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	op.Stop()

	events := readJSONLines[journal.Event](t, eventPath)
	checkEventLog(t, events, pool, n, true)
	records := checkAuditLog(t, auditPath, pool)
	created := checkRegistrationsPaired(t, records)
	recovered := 0
	for _, ev := range events {
		if ev.Reason == "RegistrationRecovered" {
			recovered++
		}
	}
	t.Logf("%d events, %d audit records, %d registrations on record for %d jobs, %d recovered from token Secrets after a crash",
		len(events), len(records), created, n, recovered)
}
