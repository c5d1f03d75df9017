package qemu_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/qemu"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest/guesttest"
)

// TestMain doubles as the guest forward's relay: QEMU runs this binary as
// `<test binary> relay <addr>` for each guest connection to the forwarded Forgejo address.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "relay" {
		if err := qemu.Relay(os.Args[2], os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir) //nolint:errcheck,gosec // best effort
	}
	os.Exit(code)
}

const (
	adminToken = "qemu-test-admin-token"
	// guestForgejo is where the guest finds Forgejo: QEMU's user network forwards it, and only
	// it, to the simulator on the host's loopback.
	guestForgejo = "10.0.2.100:3000"
)

var (
	imageOnce sync.Once
	image     guesttest.Image
	imageDir  string
)

// testImage builds the guest once per test binary.
func testImage(t testing.TB) guesttest.Image {
	t.Helper()
	imageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qemu-guest-")
		if err != nil {
			t.Fatal(err)
		}
		imageDir = dir
		image = guesttest.Build(t, dir)
	})
	if image.Initrd == "" {
		t.Fatal("the guest image could not be built (see the first failure)")
	}
	return image
}

type env struct {
	t      testing.TB
	sim    *forgejosim.Server
	client *forgejo.Client
	simURL *url.URL
	img    guesttest.Image
	base   string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	img := testImage(t)
	sim, simURL := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: adminToken, Seed: 1})
	c, err := forgejo.New(forgejo.Config{BaseURL: simURL, Token: adminToken, Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(simURL)
	if err != nil {
		t.Fatal(err)
	}
	// A raw base image: the VM's disk is a qcow2 overlay of it, and it must stay untouched.
	base := filepath.Join(t.TempDir(), "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, sim: sim, client: c, simURL: u, img: img, base: base}
}

func (e *env) driver(bootArgs string, sink func(id, path string) (io.WriteCloser, error)) *qemu.Driver {
	e.t.Helper()
	return e.driverWith(bootArgs, sink, true)
}

// driverWith makes a driver; without the forward to the simulator its VMs reach nothing, and
// QEMU runs under its seccomp sandbox.
func (e *env) driverWith(bootArgs string, sink func(id, path string) (io.WriteCloser, error), forward bool) *qemu.Driver {
	e.t.Helper()
	self, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	// Short: socket paths must fit in 108 bytes.
	runDir, err := os.MkdirTemp("", "qv")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(runDir) }) //nolint:errcheck,gosec // best effort
	var forwards []qemu.Forward
	if forward {
		forwards = []qemu.Forward{{Guest: guestForgejo, Command: []string{self, "relay", e.simURL.Host}}}
	}
	d, err := qemu.New(qemu.Config{
		RunDir: runDir, Accel: "tcg", Initrd: e.img.Initrd,
		BootArgs: qemu.DefaultBootArgs + " " + e.img.BootArgs + " " + bootArgs,
		Forwards: forwards,
		OpenSink: sink,
	})
	if err != nil {
		e.t.Fatalf("%v (%s)", err, guesttest.Install)
	}
	return d
}

func (e *env) register(name string) forgejo.Registration {
	e.t.Helper()
	reg, err := e.client.RegisterRunner(e.t.Context(), name, "qemu test", true)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	return reg
}

func (e *env) queue() forgejosim.Job {
	e.t.Helper()
	jobs, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"vm"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return jobs[0]
}

// eventually polls cond; the deadline only bounds a failing test (TCG on a shared machine is slow).
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func spec(id string, slot int, e *env, reg forgejo.Registration, onRead func()) driver.Spec {
	return driver.Spec{
		ID: id, Slot: slot, VCPUs: 1, MemoryMiB: 256, KernelPath: e.img.Kernel, RootfsPath: e.base,
		Guest: driver.GuestConfig{VMID: id, ForgejoURL: "http://" + guestForgejo, RegistrationUUID: reg.UUID,
			Token: reg.Token, Labels: []string{"vm:host"}},
		OnGuestConfigRead: onRead,
	}
}

func readLog(t testing.TB, d *qemu.Driver, id string) string {
	t.Helper()
	p, err := d.ConsoleLog(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p) //nolint:gosec // the test's VM
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBootRunsJob boots a real guest under TCG: its init takes the token over the token port,
// has its log stream acknowledged, starts the simulated runner, which reaches the Forgejo
// simulator through the only forwarded address and runs a job to success; the guest can reach
// nothing else on the host; the logs arrive; destroying the VM leaves nothing behind.
func TestBootRunsJob(t *testing.T) {
	e := newEnv(t)
	// A host service the guest must not reach: the slirp gateway 10.0.2.2 is the host.
	forbidden, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer forbidden.Close() //nolint:errcheck // test end
	var reached atomic.Int32
	go func() {
		for {
			c, err := forbidden.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			c.Close() //nolint:errcheck,gosec // counted
		}
	}()
	fport := forbidden.Addr().(*net.TCPAddr).Port
	_, simPort, _ := net.SplitHostPort(e.simURL.Host)
	// 192.0.2.1 (TEST-NET-1) is beyond the guest's subnet: with the gateway set it is routed,
	// and restrict=on still keeps it unreachable.
	probes := fmt.Sprintf("10.0.2.2:%d,10.0.2.2:%s,10.0.2.100:%d,192.0.2.1:80", fport, simPort, fport)

	d := e.driver(guest.ParamProbe+"="+probes+" "+guest.ParamGateway+"=10.0.2.2", nil)
	reg := e.register("qemu-runner")
	job := e.queue()
	const id = "vm-boot"
	var tokenRead atomic.Bool
	begin := time.Now()
	var timeTokenRead atomic.Int64
	ctx := t.Context()
	if err := d.Create(ctx, spec(id, 0, e, reg, func() {
		tokenRead.Store(true)
		timeTokenRead.Store(int64(time.Since(begin)))
	})); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { d.Destroy(context.Background(), id) }) //nolint:errcheck,gosec // best effort after a failure
	if st, err := d.State(ctx, id); err != nil || st != driver.StateCreated {
		t.Fatalf("state after create = %s, %v; want created", st, err)
	}
	dir := d.Dir(id)
	for name, want := range map[string]os.FileMode{".": 0o700, "rootfs.qcow2": 0o600, "token.sock": 0o600, "log.sock": 0o600} {
		assertMode(t, filepath.Join(dir, name), want)
	}
	// The token is not on QEMU's command line.
	pid, _ := os.ReadFile(filepath.Join(dir, "qemu.pid")) //nolint:gosec // the test's VM
	cmdline, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/cmdline")
	if err != nil {
		t.Fatalf("qemu process: %v", err)
	}
	if strings.Contains(string(cmdline), reg.Token) {
		t.Fatal("the runner token is on QEMU's command line")
	}
	started := time.Now()
	if err := d.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}

	eventually(t, 4*time.Minute, "the guest to take its token", tokenRead.Load)
	if _, err := os.Stat(filepath.Join(dir, "token.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token socket still there after the guest read it: %v", err)
	}
	eventually(t, 4*time.Minute, "the job to succeed", func() bool {
		j, _ := e.sim.Job(job.ID)
		return j.Status == forgejosim.JobSuccess
	})
	eventually(t, 2*time.Minute, "the guest to power off after its runner", func() bool {
		st, _ := d.State(ctx, id)
		return st == driver.StateStopped
	})
	log := readLog(t, d, id)
	t.Logf("VM log:\n%s", log)
	for _, want := range []string{
		"console| guest-init: up in",
		"provisioner| log stream open for " + id,
		"log stream acknowledged",
		fmt.Sprintf("probe 10.0.2.2:%d: unreachable", fport),
		fmt.Sprintf("probe 10.0.2.2:%s: unreachable", simPort),
		fmt.Sprintf("probe 10.0.2.100:%d: unreachable", fport),
		"probe 192.0.2.1:80: unreachable",
		`gateway "10.0.2.2"`,
		"guest| runner: ",
		"runner exited with code 0",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("VM log lacks %q", want)
		}
	}
	if strings.Contains(log, "probe 192.0.2.1:80: unreachable: dial tcp 192.0.2.1:80: connect: network is unreachable") {
		t.Error("the guest has no default route through frp.gw")
	}
	if strings.Contains(log, reg.Token) {
		t.Error("the runner token is in the VM log")
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the guest reached a host port outside the forward %d times", n)
	}
	t.Logf("figures (TCG): create %s, start→token read %s, start→job done ≤ %s",
		started.Sub(begin).Round(time.Millisecond), (time.Duration(timeTokenRead.Load()) - started.Sub(begin)).Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))

	if err := d.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM directory left after destroy: %v", err)
	}
	if st, err := d.State(ctx, id); err != nil || st != driver.StateGone {
		t.Errorf("state after destroy = %s, %v; want gone", st, err)
	}
	if b, err := os.ReadFile(e.base); err != nil || len(b) != 1<<20 || strings.Trim(string(b), "\x00") != "" {
		t.Errorf("the base image changed: %v", err)
	}
}

// refusingSink is a log sink that takes nothing, and remembers what it was offered.
type refusingSink struct {
	mu      sync.Mutex
	offered strings.Builder
}

func (s *refusingSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offered.Write(b)
	return 0, errors.New("log sink refuses")
}

func (s *refusingSink) Close() error { return nil }

func (s *refusingSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offered.String()
}

// TestRefusedLogSinkNeverStartsRunner is "logs before work": the guest takes its token, but the
// provisioner cannot keep its logs and so never acknowledges the log stream; the guest gives up
// and powers off without starting its runner, which never talks to Forgejo.
func TestRefusedLogSinkNeverStartsRunner(t *testing.T) {
	e := newEnv(t)
	sink := &refusingSink{}
	// No forward: the guest needs no network here, and QEMU runs under its seccomp sandbox.
	d := e.driverWith(guest.ParamAckTimeout+"=20s", func(string, string) (io.WriteCloser, error) { return sink, nil }, false)
	reg := e.register("qemu-refused")
	job := e.queue()
	const id = "vm-refused"
	var tokenRead atomic.Bool
	ctx := t.Context()
	if err := d.Create(ctx, spec(id, 1, e, reg, func() { tokenRead.Store(true) })); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { d.Destroy(context.Background(), id) })   //nolint:errcheck,gosec // best effort after a failure
	pid, _ := os.ReadFile(filepath.Join(d.Dir(id), "qemu.pid")) //nolint:gosec // the test's VM
	if cmdline, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/cmdline"); err != nil || !strings.Contains(string(cmdline), "spawn=deny") {
		t.Errorf("QEMU does not run under its seccomp sandbox: %q, %v", cmdline, err)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	eventually(t, 4*time.Minute, "the guest to take its token", tokenRead.Load)
	eventually(t, 3*time.Minute, "the guest to power off unacknowledged", func() bool {
		st, _ := d.State(ctx, id)
		return st == driver.StateStopped
	})
	offered := sink.String()
	t.Logf("offered to the refusing sink:\n%s", offered)
	// The provisioner closes a stream it cannot keep; the guest gives up at once (or, were the
	// stream left open, after frp.ack_timeout).
	if !strings.Contains(offered, "log stream not acknowledged") || !strings.Contains(offered, "not starting the runner") {
		t.Error("the guest's console does not say it gave up for want of an acknowledgement")
	}
	if strings.Contains(offered, "starting /usr/bin/forgejo-runner") {
		t.Error("the guest started its runner")
	}
	r, ok := e.sim.RunnerByUUID(reg.UUID)
	if !ok {
		t.Fatal("runner registration gone")
	}
	if r.Version != "" || r.TasksTaken != 0 || !r.LastOnline.IsZero() {
		t.Errorf("the runner talked to Forgejo without an acknowledged log stream: %+v", r)
	}
	if j, _ := e.sim.Job(job.ID); j.Status != forgejosim.JobWaiting {
		t.Errorf("job status = %s; want waiting", j.Status)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := os.Stat(d.Dir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM directory left after destroy: %v", err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s mode %o, want %o", path, got, want)
	}
}

// TestStopEndsQEMU: Stop (Ctrl+Alt+Del) during a job makes the guest kernel reboot, which
// -no-reboot turns into the end of the QEMU process.
func TestStopEndsQEMU(t *testing.T) {
	e := newEnv(t)
	d := e.driver("frp.sim_task=5m", nil)
	reg := e.register("qemu-stop")
	e.queue()
	const id = "vm-stop"
	runnerStarted := make(chan struct{})
	ctx := t.Context()
	s := spec(id, 2, e, reg, nil)
	s.OnGuestEvent = func(ev driver.GuestEvent) {
		if ev.Kind == driver.GuestRunnerStarted {
			close(runnerStarted)
		}
	}
	if err := d.Create(ctx, s); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { d.Destroy(context.Background(), id) }) //nolint:errcheck,gosec // best effort after a failure
	if err := d.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	// Up, its runner in the middle of a five-minute task.
	eventually(t, 4*time.Minute, "the guest's runner to start", func() bool {
		select {
		case <-runnerStarted:
			return true
		default:
			return false
		}
	})
	if st, err := d.State(ctx, id); err != nil || st != driver.StateRunning {
		t.Fatalf("state = %s, %v; want running", st, err)
	}
	if err := d.Stop(ctx, id); err != nil {
		t.Fatalf("stop: %v", err)
	}
	eventually(t, 2*time.Minute, "QEMU to end after the stop", func() bool {
		st, _ := d.State(ctx, id)
		return st == driver.StateStopped
	})
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}

// With taps, each guest gets its tap, its MAC and, on its kernel command line, its own address
// and the bridge as gateway (the init has no DHCP client); a slot beyond the subnet is refused
// before anything is made.
func TestTapGuestsGetTheirSlotsAddress(t *testing.T) {
	network, err := driver.ParseGuestNetwork("172.30.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	d, err := qemu.New(qemu.Config{RunDir: run, TapPrefix: "frtap", TapNetwork: &network})
	if err != nil {
		t.Fatalf("%v (%s)", err, guesttest.Install)
	}
	argv := strings.Join(d.Argv(driver.Spec{ID: "vm-tap", Slot: 3, VCPUs: 1, MemoryMiB: 256, KernelPath: "/k", RootfsPath: "/r"}), " ")
	for _, want := range []string{
		"-append " + qemu.DefaultBootArgs + " frp.addr=172.30.0.13/24 frp.gw=172.30.0.1 ",
		"-netdev tap,id=net0,ifname=frtap3,script=no,downscript=no",
		"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
	} {
		if !strings.Contains(argv, want) {
			t.Errorf("argv lacks %q:\n%s", want, argv)
		}
	}
	if strings.Contains(argv, "restrict=on") || strings.Contains(argv, "guestfwd") {
		t.Errorf("a tap guest got user networking: %s", argv)
	}
	err = d.Create(t.Context(), driver.Spec{ID: "vm-far", Slot: network.Slots(), VCPUs: 1, MemoryMiB: 256, KernelPath: "/k", RootfsPath: "/r"})
	if err == nil || !strings.Contains(err.Error(), "has no address") {
		t.Errorf("create beyond the subnet: %v", err)
	}
	if entries, _ := os.ReadDir(run); len(entries) != 0 {
		t.Errorf("a refused create left %v", entries)
	}
}
