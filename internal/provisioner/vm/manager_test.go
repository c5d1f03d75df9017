package vm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clocktesting "k8s.io/utils/clock/testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fctest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
)

const operator = "spiffe://test/operator"

// gated wraps the Firecracker driver (over its API stand-in): a test can hold a Create inside
// the driver, and sees the guest-event callbacks the manager hands it.
type gated struct {
	driver.Driver
	mu       sync.Mutex
	hold     chan struct{} // when set, Create waits for it to close
	entered  chan struct{}
	onEvents map[string]func(driver.GuestEvent)
}

func (g *gated) Create(ctx context.Context, spec driver.Spec) error {
	g.mu.Lock()
	hold, entered := g.hold, g.entered
	g.onEvents[spec.ID] = spec.OnGuestEvent
	g.mu.Unlock()
	if hold != nil {
		close(entered)
		<-hold
	}
	return g.Driver.Create(ctx, spec)
}

type host struct {
	t        *testing.T
	clock    *clocktesting.FakeClock
	launcher *fctest.Launcher
	drv      *gated
	store    *state.Store
	runDir   string
	imageDir string
	vms      *vm.Manager
}

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{t: t, clock: clocktesting.NewFakeClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)),
		launcher: fctest.NewLauncher(t), imageDir: t.TempDir()}
	// Short: socket paths must fit in 108 bytes, and test names are long.
	run, err := os.MkdirTemp("", "vmt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) }) //nolint:errcheck,gosec // best effort
	h.runDir = run
	for _, name := range []string{"vmlinux", "rootfs.ext4"} {
		if err := os.WriteFile(filepath.Join(h.imageDir, name), []byte(name), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if h.store, err = state.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	h.start()
	return h
}

// start makes a manager over the host's directories, as a (re)started provisioner does.
func (h *host) start() {
	h.t.Helper()
	fc, err := firecracker.New(firecracker.Config{RunDir: h.runDir, Binary: "firecracker", Launcher: h.launcher, Logger: logr.Discard()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.drv = &gated{Driver: fc, onEvents: map[string]func(driver.GuestEvent){}}
	h.vms, err = vm.New(vm.Config{Driver: h.drv, Store: h.store, Clock: h.clock, ImageDir: h.imageDir, VCPUs: 4, MemoryMiB: 2048,
		MinLease: time.Minute, DefaultLease: 10 * time.Minute, MaxLease: time.Hour, Logger: logr.Discard()})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.vms.Recover(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

func req(key string, vcpus uint32, lease time.Duration) vm.CreateRequest {
	return vm.CreateRequest{IdempotencyKey: key, Owner: state.Owner{Operator: operator, PoolNamespace: "ci", PoolName: "vms", RunnerName: key},
		VCPUs: vcpus, MemoryMiB: 256, Kernel: "vmlinux", RootfsImage: "rootfs.ext4", ForgejoURL: "https://forgejo.example",
		RegistrationUUID: "uuid-" + key, Token: "token-" + key, Lease: lease}
}

func (h *host) create(key string, vcpus uint32, lease time.Duration) state.Record {
	h.t.Helper()
	r, created, err := h.vms.Create(context.Background(), req(key, vcpus, lease))
	if err != nil || !created || r.Phase != state.PhaseRunning {
		h.t.Fatalf("create %s: %+v, %v, %v", key, r, created, err)
	}
	return r
}

func TestLeasesAreClampedAndRenewed(t *testing.T) {
	h := newHost(t)
	now := h.clock.Now()
	for key, tc := range map[string]struct{ asked, got time.Duration }{
		"short": {time.Second, time.Minute}, "long": {10 * time.Hour, time.Hour}, "unset": {0, 10 * time.Minute}, "fits": {5 * time.Minute, 5 * time.Minute},
	} {
		if r := h.create(key, 1, tc.asked); !r.LeaseExpireTime.Equal(now.Add(tc.got)) {
			t.Errorf("%s: asked %s, lease ends %s after now, want %s", key, tc.asked, r.LeaseExpireTime.Sub(now), tc.got)
		}
	}
	h.clock.Step(30 * time.Second)
	renewed, missing, err := h.vms.Renew(operator, nil, 2*time.Minute) // no ids: all of the operator's
	if err != nil || len(renewed) != 4 || len(missing) != 0 {
		t.Fatalf("renew all: %d renewed, missing %v, %v", len(renewed), missing, err)
	}
	for _, r := range renewed {
		if !r.LeaseExpireTime.Equal(h.clock.Now().Add(2 * time.Minute)) {
			t.Errorf("%s renewed to %s", r.ID, r.LeaseExpireTime)
		}
	}
	if renewed, _, _ := h.vms.Renew("spiffe://test/someone-else", nil, time.Hour); len(renewed) != 0 {
		t.Errorf("another operator renewed %d VMs", len(renewed))
	}
}

// The host's room: a full host refuses; a VM whose hypervisor ended, or a deleted one, frees
// its share; a freed slot is used again.
func TestCapacityAndSlots(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	a := h.create("a", 2, 0)
	b := h.create("b", 2, 0)
	if a.Slot != 0 || b.Slot != 1 {
		t.Errorf("slots %d, %d; want 0, 1", a.Slot, b.Slot)
	}
	if _, _, err := h.vms.Create(ctx, req("c", 1, 0)); !errors.Is(err, vm.ErrNoCapacity) {
		t.Fatalf("create on a full host: %v", err)
	}
	if c := h.vms.Capacity(); c.VCPUsUsed != 4 || c.MemoryMiBUsed != 512 || c.ByPhase[state.PhaseRunning] != 2 {
		t.Errorf("capacity %+v", c)
	}
	h.launcher.Exit(a.ID)
	h.vms.Reap(ctx)
	if c := h.vms.Capacity(); c.VCPUsUsed != 2 || c.ByPhase[state.PhaseStopped] != 1 {
		t.Errorf("after a's hypervisor ended: %+v", c)
	}
	c := h.create("c", 2, 0)
	if c.Slot != 2 {
		t.Errorf("c in slot %d while a still holds 0: want 2", c.Slot)
	}
	if err := h.vms.Delete(ctx, operator, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := h.vms.Delete(ctx, operator, b.ID); err != nil {
		t.Fatal(err)
	}
	if d := h.create("d", 1, 0); d.Slot != 0 {
		t.Errorf("d in slot %d after slot 0 was freed", d.Slot)
	}
}

// Concurrent creates with one key make one VM.
func TestConcurrentCreatesWithOneKeyMakeOneVM(t *testing.T) {
	h := newHost(t)
	var wg sync.WaitGroup
	ids := make([]string, 6)
	made := make([]bool, 6)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, created, err := h.vms.Create(context.Background(), req("same", 1, 0))
			if err != nil {
				t.Errorf("create %d: %v", i, err)
			}
			ids[i], made[i] = r.ID, created
		}()
	}
	wg.Wait()
	count := 0
	for i := range ids {
		if ids[i] != ids[0] {
			t.Errorf("create %d got VM %s, create 0 got %s", i, ids[i], ids[0])
		}
		if made[i] {
			count++
		}
	}
	if count != 1 || h.launcher.Running() != 1 || len(h.vms.List(operator, vm.Filter{})) != 1 {
		t.Errorf("%d creates said created, %d processes, %d VMs; want 1 each", count, h.launcher.Running(), len(h.vms.List(operator, vm.Filter{})))
	}
}

// A delete while the VM is being made waits for the making to end, then leaves nothing; the
// reaper leaves a VM being made alone even when its lease lapsed meanwhile.
func TestDeleteDuringCreateWaitsForIt(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	hold, entered := make(chan struct{}), make(chan struct{})
	h.drv.mu.Lock()
	h.drv.hold, h.drv.entered = hold, entered
	h.drv.mu.Unlock()
	type result struct {
		r   state.Record
		err error
	}
	createDone := make(chan result, 1)
	go func() {
		r, _, err := h.vms.Create(ctx, req("slow", 1, time.Minute))
		createDone <- result{r, err}
	}()
	<-entered
	list := h.vms.List(operator, vm.Filter{})
	if len(list) != 1 || list[0].Phase != state.PhaseCreating {
		t.Fatalf("while creating: %+v", list)
	}
	id := list[0].ID
	h.clock.Step(2 * time.Minute) // its lease lapses while it is being made
	h.vms.Reap(ctx)
	if _, err := h.vms.Get(operator, id); err != nil {
		t.Fatalf("the reaper took a VM still being made: %v", err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- h.vms.Delete(ctx, operator, id) }()
	select {
	case err := <-deleted:
		t.Fatalf("delete returned while the driver was still making the VM: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := h.vms.Delete(short, operator, id); err == nil || !strings.Contains(err.Error(), "still being created") {
		t.Errorf("a delete whose context ends first: %v", err)
	}
	cancel()
	close(hold)
	if res := <-createDone; res.err != nil {
		t.Fatalf("create: %v", res.err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if entries, _ := os.ReadDir(h.runDir); len(entries) != 0 || h.launcher.Running() != 0 {
		t.Errorf("left: %v, %d processes", entries, h.launcher.Running())
	}
}

// A guest's milestones count once each, whatever it repeats.
func TestMilestonesCountOnce(t *testing.T) {
	h := newHost(t)
	var mu sync.Mutex
	var kinds []vm.EventKind
	h.vms, _ = vm.New(vm.Config{Driver: h.drv, Store: h.store, Clock: h.clock, ImageDir: h.imageDir, VCPUs: 4, MemoryMiB: 2048,
		MinLease: time.Minute, DefaultLease: 10 * time.Minute, MaxLease: time.Hour, Logger: logr.Discard(),
		Events: func(ev vm.Event) { mu.Lock(); kinds = append(kinds, ev.Kind); mu.Unlock() }})
	r := h.create("chatty", 1, 0)
	h.drv.mu.Lock()
	on := h.drv.onEvents[r.ID]
	h.drv.mu.Unlock()
	first := time.Date(2026, 12, 2, 9, 0, 5, 0, time.UTC)
	for i := range 3 {
		at := first.Add(time.Duration(i) * time.Second)
		on(driver.GuestEvent{Kind: driver.GuestLogOpen, Time: at})
		on(driver.GuestEvent{Kind: driver.GuestRunnerStarted, Time: at})
		on(driver.GuestEvent{Kind: driver.GuestRunnerExited, ExitCode: i, Time: at})
	}
	got, _ := h.vms.Get(operator, r.ID)
	if !got.GuestReadyTime.Equal(first) || !got.RunnerStartTime.Equal(first) || !got.RunnerExitTime.Equal(first) || got.RunnerExitCode != 0 {
		t.Errorf("milestones %+v, want the first of each", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []vm.EventKind{vm.EventCreated, vm.EventStarted, vm.EventGuestReady, vm.EventRunnerStarted, vm.EventRunnerExited}
	if len(kinds) != len(want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Errorf("events %v, want %v", kinds, want)
			break
		}
	}
}

// A restarted provisioner gives an adopted VM whose lease lapsed while it was down the shortest
// lease, so its operator can renew it; records of another driver stop the start.
func TestRecoverAdoptsWithAFloorAndRefusesForeignRecords(t *testing.T) {
	h := newHost(t)
	r := h.create("kept", 1, time.Minute)
	if _, err := h.launcher.ReadGuestConfig(r.ID); err != nil { // the guest took its token
		t.Fatal(err)
	}
	if err := h.drv.Driver.(*firecracker.Driver).Close(); err != nil { // the provisioner exits; the VM runs on
		t.Fatal(err)
	}
	h.clock.Step(5 * time.Minute)
	h.start()
	got, err := h.vms.Get(operator, r.ID)
	if err != nil {
		t.Fatalf("not adopted: %v", err)
	}
	if want := h.clock.Now().Add(time.Minute); !got.LeaseExpireTime.Equal(want) || got.Phase != state.PhaseRunning {
		t.Errorf("adopted with lease %s, phase %s; want %s, Running", got.LeaseExpireTime, got.Phase, want)
	}
	h.vms.Reap(context.Background())
	if _, err := h.vms.Get(operator, r.ID); err != nil {
		t.Errorf("reaped at once after the restart: %v", err)
	}

	foreign := got
	foreign.ID, foreign.Driver = "vm-qemu-made", "qemu"
	if err := h.store.Save(foreign); err != nil {
		t.Fatal(err)
	}
	fc, _ := firecracker.New(firecracker.Config{RunDir: h.runDir, Binary: "firecracker", Launcher: h.launcher, Logger: logr.Discard()})
	m, _ := vm.New(vm.Config{Driver: fc, Store: h.store, Clock: h.clock, ImageDir: h.imageDir, VCPUs: 4, MemoryMiB: 2048,
		MinLease: time.Minute, DefaultLease: 10 * time.Minute, MaxLease: time.Hour, Logger: logr.Discard()})
	if err := m.Recover(context.Background()); err == nil || !strings.Contains(err.Error(), "vm-qemu-made (qemu)") {
		t.Errorf("recover with a qemu record under firecracker: %v", err)
	}
}

// A host bounded by its slots (the tap subnet's addresses) says so, as it does for vCPUs.
func TestSlotsBoundTheHost(t *testing.T) {
	h := newHost(t)
	fc, _ := firecracker.New(firecracker.Config{RunDir: h.runDir, Binary: "firecracker", Launcher: h.launcher, Logger: logr.Discard()})
	m, err := vm.New(vm.Config{Driver: fc, Store: h.store, Clock: h.clock, ImageDir: h.imageDir, VCPUs: 4, MemoryMiB: 2048, MaxSlots: 1,
		MinLease: time.Minute, DefaultLease: 10 * time.Minute, MaxLease: time.Hour, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Create(context.Background(), req("one", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Create(context.Background(), req("two", 1, 0)); !errors.Is(err, vm.ErrNoCapacity) || !strings.Contains(err.Error(), "slots") {
		t.Errorf("a second VM with one slot: %v", err)
	}
}
