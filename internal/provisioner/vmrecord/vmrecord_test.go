package vmrecord_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vmrecord"
)

func record(created time.Time) state.Record {
	return state.Record{ID: "vm-0a", Driver: "qemu", RegistrationUUID: "uuid-1", CreateTime: created, Phase: state.PhaseRunning,
		Owner: state.Owner{Operator: "spiffe://x/op", PoolNamespace: "ci", PoolName: "vms", RunnerName: "vms-abc"}}
}

func readLines(t *testing.T, path string) []vmrecord.Line {
	t.Helper()
	f, err := os.Open(path) //nolint:gosec // the test's file
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() //nolint:errcheck // read-only
	var out []vmrecord.Line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l vmrecord.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// A VM's life as the manager reports it becomes lines, figures and durations measured from its
// create request; a retried write of the same moment is written once.
func TestEventsBecomeLinesAndFigures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	reg := prometheus.NewPedanticRegistry()
	rec, err := vmrecord.New(vmrecord.Options{EventLog: jsonlog.Options{Path: path}, Logger: logr.Discard()}, reg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := record(t0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	started := r
	started.RunnerStartTime = at(7 * time.Second)
	for _, ev := range []vm.Event{
		{Kind: vm.EventCreated, Time: t0, Record: r},
		{Kind: vm.EventStarted, Time: at(100 * time.Millisecond), Record: r},
		{Kind: vm.EventGuestReady, Time: at(5 * time.Second), Record: r},
		{Kind: vm.EventGuestReady, Time: at(5 * time.Second), Record: r}, // retried: written once
		{Kind: vm.EventRunnerStarted, Time: at(7 * time.Second), Record: started},
		{Kind: vm.EventRunnerExited, Time: at(19 * time.Second), Record: started, ExitCode: 0},
		{Kind: vm.EventDriverError, Time: at(20 * time.Second), Record: started, Reason: "state", Message: "qmp: broken pipe"},
		{Kind: vm.EventDriverError, Time: at(21 * time.Second), Record: started, Reason: "state", Message: "qmp: broken pipe"},
		{Kind: vm.EventDestroyed, Time: at(95 * time.Second), Record: started, Reason: vm.ReasonDeleted},
	} {
		rec.Observe(ev)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	lines := readLines(t, path)
	var kinds []string
	for _, l := range lines {
		kinds = append(kinds, string(l.Event))
		if l.VM != "vm-0a" || l.Pool != "vms" || l.PoolNamespace != "ci" || l.Runner != "vms-abc" || l.Operator != "spiffe://x/op" || l.Driver != "qemu" {
			t.Errorf("line lacks the VM's owner: %+v", l)
		}
	}
	want := "Created Started GuestReady RunnerStarted RunnerExited DriverError DriverError Destroyed"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("events written: %s\nwant %s", got, want)
	}
	durations := map[vm.EventKind]map[string]float64{}
	for _, l := range lines {
		if l.Durations != nil {
			durations[l.Event] = l.Durations
		}
	}
	for kind, want := range map[vm.EventKind]map[string]float64{
		vm.EventGuestReady:    {vmrecord.DurationGuestReady: 5},
		vm.EventRunnerStarted: {vmrecord.DurationRunnerStarted: 7},
		vm.EventRunnerExited:  {vmrecord.DurationRunner: 12},
		vm.EventDestroyed:     {vmrecord.DurationLifetime: 95},
	} {
		for k, v := range want {
			if durations[kind][k] != v {
				t.Errorf("%s: duration %s = %v, want %v", kind, k, durations[kind][k], v)
			}
		}
	}
	if lines[4].ExitCode == nil || *lines[4].ExitCode != 0 {
		t.Errorf("RunnerExited line has no exit code: %+v", lines[4])
	}
	if lines[7].Reason != vm.ReasonDeleted {
		t.Errorf("Destroyed reason %q", lines[7].Reason)
	}

	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP forgejo_runner_provisioner_driver_errors_total Hypervisor driver operations that failed, by operation (create, start, destroy, state, reattach).
# TYPE forgejo_runner_provisioner_driver_errors_total counter
forgejo_runner_provisioner_driver_errors_total{driver="qemu",operation="state"} 2
`), "forgejo_runner_provisioner_driver_errors_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hist := map[string]struct {
		count uint64
		sum   float64
	}{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				key := mf.GetName()
				for _, lp := range m.GetLabel() {
					key += " " + lp.GetName() + "=" + lp.GetValue()
				}
				hist[key] = struct {
					count uint64
					sum   float64
				}{h.GetSampleCount(), h.GetSampleSum()}
			}
		}
	}
	for key, want := range map[string]float64{
		"forgejo_runner_provisioner_vm_boot_seconds driver=qemu stage=guest_ready":    5 + 5, // the retry is a second observation, not a second line
		"forgejo_runner_provisioner_vm_boot_seconds driver=qemu stage=runner_started": 7,
		"forgejo_runner_provisioner_vm_lifetime_seconds driver=qemu reason=Deleted":   95,
	} {
		if got, ok := hist[key]; !ok || got.sum != want {
			t.Errorf("%s: %+v, want sum %v (have %v)", key, got, want, hist)
		}
	}
}

func TestNoEventLogStillCounts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	rec, err := vmrecord.New(vmrecord.Options{Logger: logr.Discard()}, reg)
	if err != nil {
		t.Fatal(err)
	}
	rec.Observe(vm.Event{Kind: vm.EventFailed, Time: time.Now(), Record: record(time.Now()), Reason: "create", Message: "no room"})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP forgejo_runner_provisioner_vm_events_total VM lifecycle events, by kind (Created, Started, GuestReady, RunnerStarted, RunnerExited, Stopped, Failed, Adopted, Destroyed).
# TYPE forgejo_runner_provisioner_vm_events_total counter
forgejo_runner_provisioner_vm_events_total{event="Failed"} 1
`), "forgejo_runner_provisioner_vm_events_total"); err != nil {
		t.Error(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
}
