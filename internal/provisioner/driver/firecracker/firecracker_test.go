package firecracker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fctest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

func images(t *testing.T) (kernel, rootfs string) {
	t.Helper()
	dir := t.TempDir()
	kernel = filepath.Join(dir, "vmlinux")
	rootfs = filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(kernel, []byte("kernel"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootfs, []byte("base image"), 0o444); err != nil {
		t.Fatal(err)
	}
	return kernel, rootfs
}

const token = "tok-3f9a1c-secret-runner-token"

func spec(id, kernel, rootfs string, read func()) driver.Spec {
	return driver.Spec{
		ID: id, Slot: 4, VCPUs: 2, MemoryMiB: 512, KernelPath: kernel, RootfsPath: rootfs,
		Guest: driver.GuestConfig{VMID: id, ForgejoURL: "https://forgejo.example", RegistrationUUID: "uuid-1",
			Token: token, Labels: []string{"debian"}, JobHandle: "handle-1"},
		OnGuestConfigRead: read,
	}
}

// newDriver makes a driver whose Firecracker processes are the launcher's stand-ins; it lets go
// of its VMs when the test ends, as a provisioner's exit does.
func newDriver(t *testing.T, cfg firecracker.Config) *firecracker.Driver {
	t.Helper()
	if cfg.Binary == "" {
		cfg.Binary = "/usr/bin/firecracker"
	}
	if cfg.ConsolePoll == 0 {
		cfg.ConsolePoll = 20 * time.Millisecond
	}
	d, err := firecracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) //nolint:errcheck,gosec // test teardown
	return d
}

// events records what a VM's guest reported.
type events struct {
	mu   sync.Mutex
	seen []driver.GuestEvent
}

func (e *events) on(ev driver.GuestEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, ev)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.seen {
		s := string(ev.Kind)
		if ev.Kind == driver.GuestRunnerExited {
			s += fmt.Sprintf("(%d)", ev.ExitCode)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventuallyLog waits for the VM's log to be want.
func eventuallyLog(t *testing.T, d *firecracker.Driver, id, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := readLog(t, d, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM log:\n%s\nwant:\n%s", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readLog(t *testing.T, d *firecracker.Driver, id string) string {
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

// guestLog plays a guest's log stream, connected as Firecracker relays the guest's connection
// to host port GuestLogPort.
type guestLog struct {
	t    *testing.T
	conn net.Conn
	rd   *bufio.Reader
}

func openGuestLog(t *testing.T, l *fctest.Launcher, id string) *guestLog {
	t.Helper()
	conn, err := l.GuestConnect(id, firecracker.GuestLogPort)
	if err != nil {
		t.Fatalf("guest dials its log port: %v", err)
	}
	t.Cleanup(func() { conn.Close() }) //nolint:errcheck,gosec // test teardown
	return &guestLog{t: t, conn: conn, rd: bufio.NewReader(conn)}
}

func (g *guestLog) send(lines ...string) {
	g.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(g.conn, l+"\n"); err != nil {
			g.t.Fatalf("guest writes %q: %v", l, err)
		}
	}
}

// answer is the host's next line, or the error that ended the wait.
func (g *guestLog) answer(within time.Duration) (string, error) {
	g.conn.SetReadDeadline(time.Now().Add(within)) //nolint:errcheck,gosec // a test connection
	line, err := g.rd.ReadString('\n')
	return strings.TrimRight(line, "\n"), err
}

func (g *guestLog) expectAck() {
	g.t.Helper()
	if line, err := g.answer(5 * time.Second); err != nil || line != guest.LogAck {
		g.t.Fatalf("host answered %q, %v; want %s", line, err, guest.LogAck)
	}
}

// expectNoAck: the host says nothing, or closes the stream; it never acknowledges.
func (g *guestLog) expectNoAck() {
	g.t.Helper()
	line, err := g.answer(500 * time.Millisecond)
	if line != "" || (!errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF)) {
		g.t.Fatalf("host answered %q, %v; want silence or the end of the stream", line, err)
	}
}

func TestLifecycleAgainstTheStandIn(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher, TapPrefix: "fctap", Logger: logr.Discard()})
	kernel, rootfs := images(t)
	read := make(chan struct{})
	if err := d.Create(ctx, spec("vm-a", kernel, rootfs, func() { close(read) })); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, "vm-a"); st != driver.StateCreated {
		t.Errorf("state after create %q, want created", st)
	}
	dir := filepath.Join(run, "vm-a")
	for name, want := range map[string]os.FileMode{".": 0o700, "rootfs.ext4": 0o600, "v.sock_1024": 0o600,
		"v.sock_1025": 0o600, "vm.log": 0o600, "console.log": 0o600} {
		assertMode(t, filepath.Join(dir, name), want)
	}
	if err := d.Start(ctx, "vm-a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, "vm-a"); st != driver.StateRunning {
		t.Errorf("state after start %q, want running", st)
	}

	srv := launcher.Server("vm-a")
	var saw []string
	for _, r := range srv.Requests() {
		saw = append(saw, r.Method+" "+r.Path)
	}
	for _, want := range []string{"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source",
		"PUT /drives/rootfs", "PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions"} {
		if !contains(saw, want) {
			t.Errorf("driver never sent %s; sent %v", want, saw)
		}
	}
	if refused := srv.Refused(); len(refused) > 0 {
		t.Fatalf("the stand-in refused %+v", refused)
	}

	// The guest dials CID 2 port 1024; Firecracker connects to <uds_path>_1024 for it.
	data, err := launcher.ReadGuestConfig("vm-a")
	if err != nil {
		t.Fatal(err)
	}
	var got driver.GuestConfig
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatalf("guest config %q: %v", data, err)
	}
	if got.Token != token || got.JobHandle != "handle-1" {
		t.Errorf("guest read %+v", got)
	}
	<-read
	if conn, err := launcher.GuestConnect("vm-a", firecracker.GuestConfigPort); err == nil {
		conn.Close() //nolint:errcheck,gosec // should not exist
		t.Error("the guest config could be read a second time")
	}
	if _, err := os.Stat(filepath.Join(dir, "v.sock_1024")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the config socket is still there after the guest read it: %v", err)
	}

	// The console's line reaches the VM's log, which ConsoleLog names, as soon as it is asked for.
	if log := readLog(t, d, "vm-a"); log != fctest.ConsoleLine {
		t.Errorf("VM log %q, want %q", log, fctest.ConsoleLine)
	}

	// The token went nowhere else: not to Firecracker's API (boot args, MMDS, ...) and not
	// into any file of the VM's.
	for _, r := range srv.Requests() {
		if strings.Contains(r.Body, token) || strings.Contains(r.Path, token) {
			t.Errorf("the token was sent to Firecracker: %s %s %s", r.Method, r.Path, r.Body)
		}
	}
	assertNoFileHolds(t, run, token)

	if err := d.Stop(ctx, "vm-a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, "vm-a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, "vm-a"); st != driver.StateGone {
		t.Errorf("state after destroy %q, want gone", st)
	}
	if entries, _ := os.ReadDir(run); len(entries) != 0 {
		t.Errorf("destroy left %v", entries)
	}
	if err := d.Destroy(ctx, "vm-a"); err != nil {
		t.Errorf("a second destroy: %v", err)
	}
	base, _ := os.ReadFile(rootfs) //nolint:gosec // the test's image
	if string(base) != "base image" {
		t.Errorf("base image changed: %q", base)
	}
}

// TestLogStreamBeforeWork: the guest's hello is written to the VM's log and only then
// acknowledged; its lines land in the log after the console's, each with its source's prefix;
// its milestones reach OnGuestEvent. Nothing of the token is in the log.
func TestLogStreamBeforeWork(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher})
	kernel, rootfs := images(t)
	var evs events
	s := spec("vm-l", kernel, rootfs, nil)
	s.OnGuestEvent = evs.on
	if err := d.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "vm-l"); err != nil {
		t.Fatal(err)
	}
	if _, err := launcher.ReadGuestConfig("vm-l"); err != nil {
		t.Fatal(err)
	}
	g := openGuestLog(t, launcher, "vm-l")
	g.send(guest.LogHello + " vm-l")
	g.expectAck()
	if log := readLog(t, d, "vm-l"); !strings.Contains(log, "provisioner| log stream open for vm-l\n") {
		t.Fatalf("acknowledged before the hello was in the log:\n%s", log)
	}
	g.send("guest-init: log stream acknowledged",
		guest.LogEvent+" "+guest.EventRunnerStarted,
		"runner: task 1 picked up",
		guest.LogEvent+" "+guest.EventRunnerExited+" 3",
		guest.LogEvent+" runner-exploded") // not an event: a line
	eventually(t, "the guest's events", func() bool { return evs.String() == "log-stream-open runner-started runner-exited(3)" })

	want := fctest.ConsoleLine +
		"provisioner| log stream open for vm-l\n" +
		"guest| guest-init: log stream acknowledged\n" +
		"provisioner| guest event: runner-started\n" +
		"guest| runner: task 1 picked up\n" +
		"provisioner| guest event: runner-exited 3\n" +
		"guest| EVENT runner-exploded\n"
	eventuallyLog(t, d, "vm-l", want)
	assertNoFileHolds(t, run, token)
}

// refusingSink is a log sink that takes nothing.
type refusingSink struct{}

func (refusingSink) Write([]byte) (int, error) { return 0, errors.New("log sink refuses") }
func (refusingSink) Close() error              { return nil }

// TestRefusedSinkNeverAcknowledges: a VM whose log cannot be kept gets no acknowledgement,
// neither for its hello nor for a resumed stream, so its guest never starts the runner; the
// same when the sink could not even be opened.
func TestRefusedSinkNeverAcknowledges(t *testing.T) {
	for name, open := range map[string]func(string, string) (io.WriteCloser, error){
		"refusing writes": func(string, string) (io.WriteCloser, error) { return refusingSink{}, nil },
		"not opened":      func(string, string) (io.WriteCloser, error) { return nil, errors.New("disk full") },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			launcher := fctest.NewLauncher(t)
			d := newDriver(t, firecracker.Config{RunDir: t.TempDir(), Launcher: launcher, OpenSink: open})
			kernel, rootfs := images(t)
			var evs events
			s := spec("vm-r", kernel, rootfs, nil)
			s.OnGuestEvent = evs.on
			if err := d.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			if err := d.Start(ctx, "vm-r"); err != nil {
				t.Fatal(err)
			}
			if _, err := launcher.ReadGuestConfig("vm-r"); err != nil {
				t.Fatal(err)
			}
			g := openGuestLog(t, launcher, "vm-r")
			g.send(guest.LogHello + " vm-r")
			g.expectNoAck()
			g2 := openGuestLog(t, launcher, "vm-r")
			g2.send(guest.LogResume + " vm-r")
			g2.expectNoAck()
			if got := evs.String(); got != "" {
				t.Errorf("events %q from an unacknowledged guest", got)
			}
		})
	}
}

// TestReattachResumesTheLogStream: a provisioner ends (Close) while its VM runs; the guest's log
// connection ends with it, and its dials find nobody. A new driver over the same directory
// (the restarted provisioner) reattaches: the guest dials again, resumes its stream, and its
// lines continue in the same log, after the console's lines written meanwhile, each copied once.
func TestReattachResumesTheLogStream(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	cfg := firecracker.Config{RunDir: run, Launcher: launcher}
	d1 := newDriver(t, cfg)
	kernel, rootfs := images(t)
	var before events
	s := spec("vm-re", kernel, rootfs, nil)
	s.OnGuestEvent = before.on
	if err := d1.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, "vm-re"); err != nil {
		t.Fatal(err)
	}
	if _, err := launcher.ReadGuestConfig("vm-re"); err != nil {
		t.Fatal(err)
	}
	g := openGuestLog(t, launcher, "vm-re")
	g.send(guest.LogHello+" vm-re", guest.LogEvent+" "+guest.EventRunnerStarted)
	g.expectAck()
	g.send("runner: before the restart")
	eventually(t, "the line before the restart", func() bool {
		return strings.Contains(readLog(t, d1, "vm-re"), "guest| runner: before the restart\n")
	})

	// The provisioner exits. The guest's connection ends (Firecracker then shuts the guest's
	// end down), and a dial while nobody listens fails (Firecracker resets the guest's).
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if line, err := g.answer(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("the guest's log connection outlived the provisioner: %q, %v", line, err)
	}
	if conn, err := launcher.GuestConnect("vm-re", firecracker.GuestLogPort); err == nil {
		conn.Close() //nolint:errcheck,gosec // should not exist
		t.Fatal("a guest dial was accepted while no provisioner ran")
	}
	console, err := os.OpenFile(filepath.Join(run, "vm-re", "console.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	console.WriteString("written while the provisioner was away\n") //nolint:errcheck,gosec // the stand-in's console
	console.Close()                                                 //nolint:errcheck,gosec // the stand-in's console

	var after events
	d2 := newDriver(t, cfg)
	if err := d2.Reattach(ctx, "vm-re", after.on); err != nil {
		t.Fatal(err)
	}
	if err := d2.Reattach(ctx, "vm-re", after.on); err != nil {
		t.Errorf("a second reattach: %v", err)
	}
	assertMode(t, filepath.Join(run, "vm-re", "v.sock_1025"), 0o600)
	g = openGuestLog(t, launcher, "vm-re")
	g.send(guest.LogResume + " vm-re")
	g.expectAck()
	g.send("runner: after the restart", guest.LogEvent+" "+guest.EventRunnerExited+" 0")
	eventually(t, "the exit reported to the new provisioner", func() bool { return after.String() == "runner-exited(0)" })
	if got := before.String(); got != "log-stream-open runner-started" {
		t.Errorf("events before the restart %q", got)
	}

	want := fctest.ConsoleLine +
		"provisioner| log stream open for vm-re\n" +
		"provisioner| guest event: runner-started\n" +
		"guest| runner: before the restart\n" +
		"console| written while the provisioner was away\n" +
		"provisioner| log stream resumed for vm-re\n" +
		"guest| runner: after the restart\n" +
		"provisioner| guest event: runner-exited 0\n"
	eventuallyLog(t, d2, "vm-re", want)
	assertNoFileHolds(t, run, token)

	if err := d2.Destroy(ctx, "vm-re"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(run); len(entries) != 0 {
		t.Errorf("destroy left %v", entries)
	}
}

// TestConsoleStaysBounded: the console file Firecracker writes uses no more disk than about a MiB
// beyond what is not copied yet, however many lines pass: the copied part is given back (a hole
// punched, safe while Firecracker writes; or, where the filesystem cannot, the file truncated once
// the copy reached its end). Every line reaches the VM's log once, in order.
func TestConsoleStaysBounded(t *testing.T) {
	const lines, chunk = 40000, 1000 // 4 MB of console, in chunks of 100 kB
	line := func(i int) string { return fmt.Sprintf("line %06d %s", i, strings.Repeat("x", 88)) }
	for _, tc := range []struct {
		name string
		// concurrent: Firecracker writes while the console is copied and given back, not
		// waiting for the copy.
		concurrent bool
	}{{"holes", true}, {"truncation", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			poll := 5 * time.Millisecond
			if !tc.concurrent {
				// A truncation is safe only while Firecracker does not write: the copy is made
				// only when ConsoleLog is called, between the writes.
				firecracker.NoHolePunching(t)
				poll = time.Hour
			}
			launcher := fctest.NewLauncher(t)
			run := t.TempDir()
			d := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher, ConsolePoll: poll, Logger: logr.Discard()})
			kernel, rootfs := images(t)
			if err := d.Create(ctx, spec("vm-big", kernel, rootfs, nil)); err != nil {
				t.Fatal(err)
			}
			if err := d.Start(ctx, "vm-big"); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(run, "vm-big", "console.log")
			console, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0) //nolint:gosec // as Firecracker writes it
			if err != nil {
				t.Fatal(err)
			}
			defer console.Close() //nolint:errcheck // the test's console
			var most int64
			for i := range lines {
				if _, err := io.WriteString(console, line(i)+"\n"); err != nil {
					t.Fatal(err)
				}
				if (i+1)%chunk != 0 {
					continue
				}
				if tc.concurrent {
					// Firecracker runs ahead of the copy by a chunk or two, not the whole console.
					if i+1 > chunk {
						waitForLine(t, filepath.Join(run, "vm-big", "vm.log"), line(i-chunk))
					}
				} else if _, err := d.ConsoleLog("vm-big"); err != nil {
					t.Fatal(err)
				}
				most = max(most, diskUse(t, path))
			}
			eventually(t, "the last line in the VM's log", func() bool {
				return strings.HasSuffix(readLog(t, d, "vm-big"), line(lines-1)+"\n")
			})
			most = max(most, diskUse(t, path))
			if most > 2<<20 {
				t.Errorf("the console used up to %d bytes on disk for 4 MB written", most)
			}
			if end := diskUse(t, path); end > 1<<20+64<<10 {
				t.Errorf("the console uses %d bytes on disk once copied", end)
			}
			log := strings.Split(strings.TrimSuffix(readLog(t, d, "vm-big"), "\n"), "\n")
			if len(log) != 1+lines || log[0]+"\n" != fctest.ConsoleLine {
				t.Fatalf("the VM's log has %d lines, want %d", len(log), 1+lines)
			}
			for i, l := range log[1:] {
				if l != "console| "+line(i) {
					t.Fatalf("line %d of the VM's log is %q, want %q", i+1, l, "console| "+line(i))
				}
			}
		})
	}
}

// waitForLine waits until the file at path has the line, not making the driver copy anything.
func waitForLine(t *testing.T, path, line string) {
	t.Helper()
	eventually(t, "line "+line[:11], func() bool {
		b, err := os.ReadFile(path) //nolint:gosec // the test's VM
		return err == nil && strings.Contains(string(b), line+"\n")
	})
}

// diskUse is what the file at path takes on disk.
func diskUse(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestReattachNeedsARunningVM: nothing to reattach to when the process is gone.
func TestReattachNeedsARunningVM(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d1 := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher})
	kernel, rootfs := images(t)
	if err := d1.Create(ctx, spec("vm-x", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher})
	// Created, never started: not running, so not adoptable.
	if err := d2.Reattach(ctx, "vm-x", nil); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("reattach to a VM never started: %v", err)
	}
	if err := d2.Start(ctx, "vm-x"); err != nil {
		t.Fatal(err)
	}
	launcher.Exit("vm-x")
	if err := d2.Reattach(ctx, "vm-x", nil); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("reattach to a VM whose process exited: %v", err)
	}
	if err := d2.Reattach(ctx, "vm-none", nil); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("reattach to no VM: %v", err)
	}
}

// TestDestroyLeavesNothing: with the guest's log stream open, Destroy ends the connection, the
// listener and the console tail, and removes every file: the sockets cannot be dialled, and no
// goroutine of the VM's is left.
func TestDestroyLeavesNothing(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher})
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-d", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "vm-d"); err != nil {
		t.Fatal(err)
	}
	g := openGuestLog(t, launcher, "vm-d")
	g.send(guest.LogHello + " vm-d")
	g.expectAck()
	sockets := []string{filepath.Join(run, "vm-d", "v.sock_1024"), filepath.Join(run, "vm-d", "v.sock_1025")}
	// The check below sees what runs: while the VM lives (its configuration unread, its log
	// stream open), each of the driver's loops is found.
	eventually(t, "the driver's goroutines", func() bool {
		running := driverGoroutines()
		for _, fn := range driverGoroutineFuncs {
			if len(running[fn]) == 0 {
				return false
			}
		}
		return true
	})

	if err := d.Destroy(ctx, "vm-d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(run, "vm-d")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("VM directory after destroy: %v", err)
	}
	for _, s := range sockets {
		if conn, err := net.Dial("unix", s); err == nil {
			conn.Close() //nolint:errcheck,gosec // should not exist
			t.Errorf("%s accepted a connection after destroy", s)
		}
	}
	if line, err := g.answer(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Errorf("the guest's log connection outlived the VM: %q, %v", line, err)
	}
	if launcher.Running() != 0 {
		t.Error("the VM's process still runs")
	}
	if left := driverGoroutines(); len(left) != 0 {
		t.Errorf("goroutines left after destroy: %v", slices.Sorted(maps.Keys(left)))
	}
}

// driverGoroutineFuncs are the functions the driver's per-VM goroutines run: the log socket's
// accept loop, the guest's log stream on each connection (guestlog.Stream.Serve), the console
// tail, the one-shot configuration channel.
var driverGoroutineFuncs = []string{"firecracker.(*vm).serveLog", "guestlog.(*Stream).serve",
	"firecracker.(*consoleTail).follow", "guestchan.Serve"}

// driverGoroutines returns the stacks of goroutines running the driver's per-VM loops, by the
// function of driverGoroutineFuncs each runs (a stream's goroutine is also serveLog's: it is
// listed under both).
func driverGoroutines() map[string][]string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string][]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range driverGoroutineFuncs {
			if strings.Contains(g, fn+"(") || strings.Contains(g, fn+".func") {
				out[fn] = append(out[fn], g)
			}
		}
	}
	return out
}

func TestDestroyBeforeTheGuestReadsDropsTheToken(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d := newDriver(t, firecracker.Config{RunDir: run, Binary: "firecracker", Launcher: launcher})
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-b", kernel, rootfs, func() { t.Error("config read after destroy") })); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, "vm-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(run, "vm-b")); !os.IsNotExist(err) {
		t.Fatalf("VM directory still there: %v", err)
	}
	if st, _ := d.State(ctx, "vm-b"); st != driver.StateGone {
		t.Errorf("state %q", st)
	}
}

func TestProcessGoneIsStopped(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	d := newDriver(t, firecracker.Config{RunDir: t.TempDir(), Binary: "firecracker", Launcher: launcher})
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-c", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	launcher.Exit("vm-c") // the process "exits"
	if st, _ := d.State(ctx, "vm-c"); st != driver.StateStopped {
		t.Errorf("state %q, want stopped", st)
	}
}

// TestStateComesFromTheProcess: a VM runs while its process does, whatever its API says: an API
// too busy to answer in time, or gone, is no sign of its end (the VM manager would free the
// capacity of a VM that runs, and a restarted provisioner would destroy it instead of adopting
// it); a restarted provisioner adopts such VMs. Once the process ended, the VM is stopped.
func TestStateComesFromTheProcess(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	cfg := firecracker.Config{RunDir: t.TempDir(), Launcher: launcher, Logger: logr.Discard()}
	d1 := newDriver(t, cfg)
	kernel, rootfs := images(t)
	for _, id := range []string{"vm-busy", "vm-deaf"} {
		if err := d1.Create(ctx, spec(id, kernel, rootfs, nil)); err != nil {
			t.Fatal(err)
		}
		if err := d1.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	release := launcher.Server("vm-busy").Hold()
	defer release()
	launcher.Server("vm-deaf").Close() //nolint:errcheck,gosec // its API answers no more; its process runs
	state := func(d *firecracker.Driver, id string) driver.State {
		t.Helper()
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		st, err := d.State(short, id)
		if err != nil {
			t.Fatalf("state of %s: %v", id, err)
		}
		return st
	}
	for _, id := range []string{"vm-busy", "vm-deaf"} {
		if st := state(d1, id); st != driver.StateRunning {
			t.Errorf("%s: state %q, want running", id, st)
		}
	}

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := newDriver(t, cfg)
	for _, id := range []string{"vm-busy", "vm-deaf"} {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		if err := d2.Reattach(short, id, nil); err != nil {
			t.Errorf("a restarted provisioner does not adopt %s: %v", id, err)
		}
		cancel()
	}

	launcher.Exit("vm-busy")
	if st := state(d2, "vm-busy"); st != driver.StateStopped {
		t.Errorf("state %q after the process ended, want stopped", st)
	}
}

// TestJailDestroy: jailed, the process the driver knows is the one the jailer
// reports (with --new-pid-ns the jailer's child: the jailer itself has ended); Destroy returns
// only once it has ended, and removes the VM's cgroup, which the jailer made, with the jail.
func TestJailDestroy(t *testing.T) {
	ctx := context.Background()
	kernel, rootfs := images(t)
	for _, newPIDNS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "pidns"}[newPIDNS], func(t *testing.T) {
			launcher := fctest.NewLauncher(t)
			base, cgroups := t.TempDir(), t.TempDir()
			d := newDriver(t, firecracker.Config{Launcher: launcher, Logger: logr.Discard(), Jailer: &firecracker.Jailer{
				Binary: "/usr/bin/jailer", ChrootBase: base, UID: os.Getuid(), GID: os.Getgid(),
				ParentCgroup: "frp-vms", NewPIDNS: newPIDNS, CgroupRoot: cgroups}})
			cgroup := filepath.Join(cgroups, "frp-vms", "vm-w")
			if err := os.MkdirAll(cgroup, 0o755); err != nil { // as the jailer makes it
				t.Fatal(err)
			}
			if err := d.Create(ctx, spec("vm-w", kernel, rootfs, nil)); err != nil {
				t.Fatal(err)
			}
			if st, err := d.State(ctx, "vm-w"); st != driver.StateCreated || err != nil {
				t.Errorf("state after create %q, %v; want created", st, err)
			}
			if err := d.Start(ctx, "vm-w"); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(base, "firecracker", "vm-w")
			pid := recordedPID(t, state)
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.Contains(string(cmdline), "\x00vm-w\x00") {
				t.Fatalf("the recorded process %d is not the VM's: %q", pid, cmdline)
			}
			if err := d.Destroy(ctx, "vm-w"); err != nil {
				t.Fatal(err)
			}
			if processRuns(pid) {
				t.Errorf("the process %d still runs after Destroy returned", pid)
			}
			for _, gone := range []string{cgroup, state} {
				if _, err := os.Stat(gone); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after destroy: %v", gone, err)
				}
			}
			if st, err := d.State(ctx, "vm-w"); st != driver.StateGone || err != nil {
				t.Errorf("state after destroy %q, %v", st, err)
			}
		})
	}
}

// TestExecLauncherKnowsItsProcess: the launcher's record names one process: not another given
// its pid since (another start time or boot), not a zombie, not (for an earlier provisioner's
// record of the pid alone) a process whose command line does not name the VM. Kill returns once
// the process has ended.
func TestExecLauncherKnowsItsProcess(t *testing.T) {
	ctx := context.Background()
	var l firecracker.ExecLauncher
	state := t.TempDir()
	record := func(format string, args ...any) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(state, "firecracker.pid"), []byte(fmt.Sprintf(format, args...)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	alive := func(what string, want bool) {
		t.Helper()
		if got, err := l.Alive("vm-e", state); got != want || err != nil {
			t.Errorf("%s: alive %v, %v; want %v", what, got, err, want)
		}
	}
	alive("never launched", false)
	self, boot := os.Getpid(), bootID(t)
	record("%d %d %s", self, processStart(t, self)+1, boot)
	alive("another process under the recorded pid", false)
	record("%d %d %s", self, processStart(t, self), "another-boot")
	alive("a process of another boot", false)
	record("%d", self)
	alive("an earlier provisioner's record of a process not naming the VM", false)

	child := exec.Command("/bin/true")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	record("%d %d %s", child.Process.Pid, processStart(t, child.Process.Pid), boot)
	eventually(t, "the child to end", func() bool { return !processRuns(child.Process.Pid) })
	alive("a zombie", false)
	child.Wait() //nolint:errcheck,gosec // reaped at last

	record("not a pid")
	if _, err := l.Alive("vm-e", state); err == nil {
		t.Error("a broken record told nothing")
	}

	fifo := filepath.Join(t.TempDir(), "wait.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Launch(ctx, firecracker.Launch{ID: "vm-e", Dir: state, StateDir: state, Console: filepath.Join(state, "console.log"),
		Argv: []string{"/bin/sh", "-c", `read -r x < "$0"`, fifo, "--id", "vm-e"}}); err != nil {
		t.Fatal(err)
	}
	alive("launched", true)
	pid := recordedPID(t, state)
	record("%d", pid)
	alive("an earlier provisioner's record of a process naming the VM", true)
	if err := l.Kill(ctx, "vm-e", state); err != nil {
		t.Fatal(err)
	}
	if processRuns(pid) {
		t.Errorf("the process %d still runs after Kill returned", pid)
	}
	alive("killed", false)
}

// recordedPID is the pid in a VM's process record.
func recordedPID(t *testing.T, state string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(state, "firecracker.pid")) //nolint:gosec // the test's VM
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil {
		t.Fatalf("record %q: %v", data, err)
	}
	return pid
}

// processRuns: pid is a process, and not a zombie.
func processRuns(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

// processStart is the start time of process pid, in clock ticks after boot.
func processStart(t *testing.T, pid int) uint64 {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	var start uint64
	if _, err := fmt.Sscan(fields[19], &start); err != nil {
		t.Fatal(err)
	}
	return start
}

func bootID(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skipf("no boot id: %v", err)
	}
	return strings.TrimSpace(string(data))
}

func TestJailedPathsAreInsideTheChroot(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	base := t.TempDir()
	j := &firecracker.Jailer{Binary: "/usr/bin/jailer", ChrootBase: base, UID: os.Getuid(), GID: os.Getgid(), ParentCgroup: "forgejo-runner-vms"}
	d := newDriver(t, firecracker.Config{Jailer: j, Launcher: launcher})
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-j", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "firecracker", "vm-j", "root")
	for _, name := range []string{"vmlinux", "rootfs.ext4", "firecracker.socket", "v.sock_1024", "v.sock_1025", "console.log"} {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("jail lacks %s: %v", name, err)
		}
	}
	for _, r := range launcher.Server("vm-j").Requests() {
		if strings.Contains(r.Body, base) {
			t.Errorf("a host path reached the jailed Firecracker: %s %s", r.Path, r.Body)
		}
	}
	argv := strings.Join(launcher.Launches()[0].Argv, " ")
	for _, want := range []string{"--id vm-j", "--exec-file /usr/bin/firecracker", "--chroot-base-dir " + base,
		"--cgroup-version 2", "--cgroup cpu.max=200000 100000", "--parent-cgroup forgejo-runner-vms", "-- --api-sock /firecracker.socket"} {
		if !strings.Contains(argv, want) {
			t.Errorf("jailer argv %q lacks %q", argv, want)
		}
	}
	// The guest's connections, relayed from the chroot-relative uds_path, reach the driver.
	if err := d.Start(ctx, "vm-j"); err != nil {
		t.Fatal(err)
	}
	if _, err := launcher.ReadGuestConfig("vm-j"); err != nil {
		t.Errorf("the jailed guest's configuration: %v", err)
	}
	g := openGuestLog(t, launcher, "vm-j")
	g.send(guest.LogHello + " vm-j")
	g.expectAck()
	if err := d.Destroy(ctx, "vm-j"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker", "vm-j")); !os.IsNotExist(err) {
		t.Errorf("jail left behind: %v", err)
	}
}

// TestJailCannotRedirect: a jailed Firecracker owns its jail's root and
// may replace anything in it. The provisioner's own files of the VM (its log, which StreamLogs
// serves, the console offset, the process record) are outside the jail, in a 0700 directory;
// what it reads inside (the console) it takes only as a regular file of one link: a symlink or
// hard link to a host file put there is neither read nor written through, before or after a
// restart, and a FIFO does not stall it; a symlink for the API socket is not connected to.
func TestJailCannotRedirect(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	base := t.TempDir()
	cfg := firecracker.Config{Launcher: launcher, Logger: logr.Discard(),
		Jailer: &firecracker.Jailer{Binary: "/usr/bin/jailer", ChrootBase: base, UID: os.Getuid(), GID: os.Getgid()}}
	d1 := newDriver(t, cfg)
	kernel, rootfs := images(t)
	if err := d1.Create(ctx, spec("vm-s", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, "vm-s"); err != nil {
		t.Fatal(err)
	}
	g := openGuestLog(t, launcher, "vm-s")
	g.send(guest.LogHello + " vm-s")
	g.expectAck()
	root := filepath.Join(base, "firecracker", "vm-s", "root")
	state := filepath.Dir(root)
	for _, name := range []string{"vm.log", "console.offset"} {
		if _, err := os.Lstat(filepath.Join(root, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is in the jail: %v", name, err)
		}
	}
	// The jail's firecracker.pid is the jailer's report, read once at the launch; the record the
	// provisioner goes by is its own.
	if _, err := os.Lstat(filepath.Join(state, "firecracker.pid")); err != nil {
		t.Errorf("no record of the process in the state directory: %v", err)
	}
	if p, err := d1.ConsoleLog("vm-s"); err != nil || filepath.Dir(p) != state {
		t.Errorf("the VM's log is %q (%v), want it in %s", p, err, state)
	}
	assertMode(t, state, 0o700)

	// What the escaped Firecracker aims at: files of the host's.
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	const secretText = "host secret\n"
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	unchanged := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(secret); err != nil || string(b) != secretText { //nolint:gosec // the test's file
			t.Errorf("%s: the host file holds %q, %v", when, b, err)
		}
	}
	plant := func(name string, link func(string, string) error) {
		t.Helper()
		if err := os.Remove(filepath.Join(root, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if err := link(secret, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"vm.log", "console.offset", "firecracker.pid"} {
		plant(name, os.Symlink)
	}
	for kind, link := range map[string]func(string, string) error{"symlink": os.Symlink, "hard link": os.Link} {
		plant("console.log", link)
		if log := readLog(t, d1, "vm-s"); strings.Contains(log, "host secret") {
			t.Errorf("a console replaced by a %s to a host file was read into the VM's log:\n%s", kind, log)
		}
		unchanged("console " + kind)
	}

	// The provisioner restarts and takes the VM up again among the planted links.
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := newDriver(t, cfg)
	if err := d2.Reattach(ctx, "vm-s", nil); err != nil {
		t.Fatal(err)
	}
	g = openGuestLog(t, launcher, "vm-s")
	g.send(guest.LogResume + " vm-s")
	g.expectAck()
	g.send("runner: after the restart")
	eventually(t, "the guest's line after the restart", func() bool {
		return strings.Contains(readLog(t, d2, "vm-s"), "guest| runner: after the restart\n")
	})
	if log := readLog(t, d2, "vm-s"); strings.Contains(log, "host secret") {
		t.Errorf("the VM's log holds the host file:\n%s", log)
	}
	unchanged("after the restart")

	// A FIFO for a console: reading it would wait for a writer forever.
	if err := os.Remove(filepath.Join(root, "console.log")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "console.log"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d2.ConsoleLog("vm-s") //nolint:errcheck,gosec // only whether it returns
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a FIFO for a console stalled the provisioner")
	}

	// The API socket replaced by a symlink to another socket of the host's.
	other, err := net.Listen("unix", filepath.Join(host, "other.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close() //nolint:errcheck // the test's listener
	if err := os.Remove(filepath.Join(root, "firecracker.socket")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "other.sock"), filepath.Join(root, "firecracker.socket")); err != nil {
		t.Fatal(err)
	}
	d2.State(ctx, "vm-s")                                                         //nolint:errcheck,gosec // only whom it asks
	d2.Stop(ctx, "vm-s")                                                          //nolint:errcheck,gosec // only whom it asks
	other.(*net.UnixListener).SetDeadline(time.Now().Add(200 * time.Millisecond)) //nolint:errcheck,gosec // the test's listener
	if conn, err := other.Accept(); err == nil {
		conn.Close() //nolint:errcheck,gosec // should not exist
		t.Error("the provisioner connected to the socket a symlink in the jail named")
	}

	if err := d2.Destroy(ctx, "vm-s"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the VM's state directory after destroy: %v", err)
	}
	unchanged("after destroy")
}

// TestJailerCommandLine: the jailer is given the parent cgroup, the network namespace and a new
// PID namespace when configured, and nothing of them otherwise; Firecracker's own arguments
// after "--" do not repeat --id (the jailer passes it, and Firecracker refuses a second); the
// jail is made where the jailer puts it, under the Firecracker binary's resolved file name.
func TestJailerCommandLine(t *testing.T) {
	ctx := context.Background()
	kernel, rootfs := images(t)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "firecracker-v1.15.1-x86_64"), []byte("#!/bin/false\n"), 0o755); err != nil { //nolint:gosec // a stand-in binary
		t.Fatal(err)
	}
	if err := os.Symlink("firecracker-v1.15.1-x86_64", filepath.Join(bin, "firecracker")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		jailer     firecracker.Jailer
		want, nots []string
	}{
		{"plain", firecracker.Jailer{},
			nil, []string{"--parent-cgroup", "--netns", "--new-pid-ns"}},
		{"all", firecracker.Jailer{ParentCgroup: "forgejo-runner-vms", NetNS: "/var/run/netns/frp", NewPIDNS: true},
			[]string{"--parent-cgroup forgejo-runner-vms", "--netns /var/run/netns/frp", "--new-pid-ns"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			launcher := fctest.NewLauncher(t)
			base := t.TempDir()
			j := tc.jailer
			j.Binary, j.ChrootBase, j.UID, j.GID = "/usr/bin/jailer", base, os.Getuid(), os.Getgid()
			d := newDriver(t, firecracker.Config{Jailer: &j, Binary: filepath.Join(bin, "firecracker"), Launcher: launcher})
			if err := d.Create(ctx, spec("vm-jc", kernel, rootfs, nil)); err != nil {
				t.Fatal(err)
			}
			defer d.Destroy(ctx, "vm-jc") //nolint:errcheck // the test's VM
			argv := launcher.Launches()[0].Argv
			jailer, fc, found := strings.Cut(strings.Join(argv, " "), " -- ")
			if !found {
				t.Fatalf("no -- in %q", argv)
			}
			for _, want := range append([]string{"/usr/bin/jailer --id vm-jc", "--exec-file " + filepath.Join(bin, "firecracker"),
				"--uid " + fmt.Sprint(os.Getuid()), "--gid " + fmt.Sprint(os.Getgid()), "--chroot-base-dir " + base,
				"--cgroup-version 2", "--cgroup cpu.max=200000 100000", "--cgroup memory.max=603979776"}, tc.want...) {
				if !strings.Contains(jailer+" ", want+" ") {
					t.Errorf("jailer argv %q lacks %q", jailer, want)
				}
			}
			for _, not := range tc.nots {
				if strings.Contains(jailer, not) {
					t.Errorf("jailer argv %q has %q", jailer, not)
				}
			}
			if fc != "--api-sock /firecracker.socket" {
				t.Errorf("Firecracker's arguments %q, want only the API socket", fc)
			}
			if launch := launcher.Launches()[0]; launch.Dir != filepath.Join(base, "firecracker-v1.15.1-x86_64", "vm-jc", "root") {
				t.Errorf("the jail is %s, not where the jailer makes it", launch.Dir)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
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

func assertNoFileHolds(t *testing.T, root, secret string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path) //nolint:gosec // test walk
		if err != nil {
			return err
		}
		if strings.Contains(string(data), secret) {
			t.Errorf("%s holds the token", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The guest's init learns its transport and network from the kernel command line the driver
// gives Firecracker: vsock always; no interface without a tap; with taps, the slot's address and
// the bridge as gateway; a slot beyond the subnet is refused before anything is made.
func TestBootArgsCarryTheGuestsTransportAndNetwork(t *testing.T) {
	ctx := context.Background()
	kernel, rootfs := images(t)
	network, err := driver.ParseGuestNetwork("172.30.0.0/27")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  firecracker.Config
		want string
	}{
		{"no tap", firecracker.Config{}, " frp.transport=vsock frp.addr=none"},
		{"taps", firecracker.Config{TapPrefix: "frtap", TapNetwork: &network}, " frp.transport=vsock frp.addr=172.30.0.14/27 frp.gw=172.30.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			launcher := fctest.NewLauncher(t)
			cfg := tc.cfg
			cfg.RunDir, cfg.Launcher, cfg.Logger = t.TempDir(), launcher, logr.Discard()
			d := newDriver(t, cfg)
			if err := d.Create(ctx, spec("vm-args", kernel, rootfs, nil)); err != nil {
				t.Fatal(err)
			}
			defer d.Destroy(ctx, "vm-args") //nolint:errcheck // the test's VM
			var args string
			for _, r := range launcher.Server("vm-args").Requests() {
				if r.Path == "/boot-source" {
					var body struct {
						BootArgs string `json:"boot_args"`
					}
					if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
						t.Fatal(err)
					}
					args = body.BootArgs
				}
			}
			if args != firecracker.DefaultBootArgs+tc.want {
				t.Errorf("boot_args %q, want %q", args, firecracker.DefaultBootArgs+tc.want)
			}
		})
	}
	// A /27 has addresses for 21 VMs (.10 to .30).
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	d := newDriver(t, firecracker.Config{RunDir: run, Launcher: launcher, TapPrefix: "frtap", TapNetwork: &network, Logger: logr.Discard()})
	s := spec("vm-far", kernel, rootfs, nil)
	s.Slot = 21
	if err := d.Create(ctx, s); err == nil || !strings.Contains(err.Error(), "slot 21 has no address") {
		t.Errorf("create in slot 21 of a /27: %v", err)
	}
	if entries, _ := os.ReadDir(run); len(entries) != 0 || launcher.Running() != 0 {
		t.Errorf("a refused create left %v and %d processes", entries, launcher.Running())
	}
}
