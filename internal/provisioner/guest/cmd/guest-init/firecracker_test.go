//go:build linux

package main

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fctest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

// relayTransport reaches the Firecracker driver as the vsock transport would through a real
// Firecracker: each dial of a port is a connection to the Unix socket Firecracker would connect
// the guest's connection to. Only the vsock dial itself is left out.
type relayTransport struct {
	l  *fctest.Launcher
	id string
}

func (r relayTransport) openConfig() (io.ReadWriteCloser, error) {
	return r.l.GuestConnect(r.id, guest.VsockConfigPort)
}

func (r relayTransport) openLog() (io.ReadWriteCloser, error) {
	return r.l.GuestConnect(r.id, guest.VsockLogPort)
}

func (relayTransport) resumes() bool { return true }

type guestEvents struct {
	mu    sync.Mutex
	kinds []string
}

func (e *guestEvents) on(ev driver.GuestEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.kinds = append(e.kinds, string(ev.Kind))
}

func (e *guestEvents) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.kinds, " ")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInitAgainstTheFirecrackerDriver runs the init's protocol against the Firecracker driver
// over the driver's vsock sockets: the configuration is read once, the log stream acknowledged,
// the runner's lines and milestones reach the VM's log and OnGuestEvent; the provisioner
// restarts meanwhile (the driver closed, a new one reattached) and the runner's output waits,
// then continues in the same log; Destroy leaves nothing.
func TestInitAgainstTheFirecrackerDriver(t *testing.T) {
	ctx := context.Background()
	launcher := fctest.NewLauncher(t)
	run := t.TempDir()
	images := t.TempDir()
	for _, f := range []string{"vmlinux", "rootfs.ext4"} {
		if err := os.WriteFile(filepath.Join(images, f), []byte(f), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	cfg := firecracker.Config{RunDir: run, Binary: "firecracker", Launcher: launcher, ConsolePoll: 20 * time.Millisecond,
		BootArgs: firecracker.DefaultBootArgs + " " + guest.ParamTransport + "=" + guest.TransportVsock}
	d1, err := firecracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d1.Close() }) //nolint:errcheck,gosec // test teardown
	const id = "vm-g"
	const token = "tok-guest-init-9b2e"
	var before, after guestEvents
	if err := d1.Create(ctx, driver.Spec{ID: id, Slot: 1, VCPUs: 1, MemoryMiB: 256,
		KernelPath: filepath.Join(images, "vmlinux"), RootfsPath: filepath.Join(images, "rootfs.ext4"),
		Guest:        driver.GuestConfig{VMID: id, ForgejoURL: "https://forgejo.example", RegistrationUUID: "uuid-g", Token: token},
		OnGuestEvent: before.on}); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, id); err != nil {
		t.Fatal(err)
	}

	var con console
	o := testOptions(&con)
	o.ackTimeout = 2 * time.Second
	proceed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve(relayTransport{l: launcher, id: id}, o, func(c driver.GuestConfig, logw *logStream) (int, error) {
			if c.Token != token {
				t.Errorf("the runner got %+v", c)
			}
			logw.line(guest.LogEvent + " " + guest.EventRunnerStarted)
			logw.line("runner: before the restart")
			<-proceed
			logw.line("runner: after the restart")
			return 0, nil
		})
	}()
	logOf := func(d *firecracker.Driver) string {
		p, err := d.ConsoleLog(id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p) //nolint:gosec // the test's VM
		return string(b)
	}
	waitFor(t, "the runner's first line", func() bool { return strings.Contains(logOf(d1), "guest| runner: before the restart\n") })
	if got := before.String(); got != "log-stream-open runner-started" {
		t.Errorf("events %q", got)
	}
	if _, err := launcher.GuestConnect(id, guest.VsockConfigPort); err == nil {
		t.Error("the configuration could be dialled again")
	}

	// The provisioner exits; the runner writes on and is held; the init dials and finds nobody.
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	waitFor(t, "the init to dial again", func() bool { return strings.Contains(con.String(), "dialling again") })
	select {
	case err := <-done:
		t.Fatalf("the init finished while its log stream was broken: %v", err)
	default:
	}

	d2, err := firecracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() }) //nolint:errcheck,gosec // test teardown
	if err := d2.Reattach(ctx, id, after.on); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the init did not finish; console:\n%s", con.String())
	}
	waitFor(t, "the exit reported to the new provisioner", func() bool { return after.String() == "runner-exited" })
	log := logOf(d2)
	var order []string
	for _, want := range []string{
		fctest.ConsoleLine,
		"provisioner| log stream open for " + id + "\n",
		"guest| guest-init: log stream acknowledged",
		"provisioner| guest event: runner-started\n",
		"guest| runner: before the restart\n",
		"provisioner| log stream resumed for " + id + "\n",
		"guest| runner: after the restart\n",
		"provisioner| guest event: runner-exited 0\n",
		"guest| guest-init: runner exited with code 0; powering off\n",
	} {
		i := strings.Index(log, want)
		if i < 0 {
			t.Errorf("VM log lacks %q", want)
			continue
		}
		order = append(order, want)
		if len(order) > 1 && i < strings.Index(log, order[len(order)-2]) {
			t.Errorf("%q comes before %q", want, order[len(order)-2])
		}
	}
	if t.Failed() {
		t.Logf("VM log:\n%s\nconsole:\n%s", log, con.String())
	}
	err = filepath.WalkDir(run, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path) //nolint:gosec // test walk
		if strings.Contains(string(b), token) {
			t.Errorf("%s holds the token", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := d2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(run); len(entries) != 0 {
		t.Errorf("destroy left %v", entries)
	}
}
