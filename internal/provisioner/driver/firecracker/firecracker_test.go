package firecracker

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fcstandin"
)

// standInLauncher "runs" Firecracker as a stand-in API server per VM, in this process.
type standInLauncher struct {
	spec *fcstandin.Spec

	mu       sync.Mutex
	servers  map[string]*fcstandin.Server
	launches []Launch
}

func (l *standInLauncher) Launch(_ context.Context, launch Launch) error {
	srv := fcstandin.New(l.spec, launch.ID)
	srv.OnAction(func(action string) {
		if action == "InstanceStart" {
			f, err := os.OpenFile(launch.Console, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.WriteString("Linux version 6.1 (stand-in)\n") //nolint:errcheck,gosec // console noise
				f.Close()                                       //nolint:errcheck,gosec // console noise
			}
		}
	})
	if err := srv.Listen(launch.APISocket); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[launch.ID] = srv
	l.launches = append(l.launches, launch)
	return nil
}

func (l *standInLauncher) Kill(_ context.Context, id, _ string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if srv := l.servers[id]; srv != nil {
		return srv.Close()
	}
	return nil
}

func (l *standInLauncher) server(id string) *fcstandin.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers[id]
}

func newLauncher(t *testing.T) *standInLauncher {
	t.Helper()
	spec, err := fcstandin.LoadSpec(filepath.Join("fcstandin", "testdata", "firecracker-api-v1.15.1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	l := &standInLauncher{spec: spec, servers: map[string]*fcstandin.Server{}}
	t.Cleanup(func() {
		for _, s := range l.servers {
			s.Close() //nolint:errcheck,gosec // test teardown
		}
	})
	return l
}

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

func TestLifecycleAgainstTheStandIn(t *testing.T) {
	ctx := context.Background()
	launcher := newLauncher(t)
	run := t.TempDir()
	d, err := New(Config{RunDir: run, Binary: "/usr/bin/firecracker", Launcher: launcher, TapPrefix: "fctap", Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	kernel, rootfs := images(t)
	read := make(chan struct{})
	if err := d.Create(ctx, spec("vm-a", kernel, rootfs, func() { close(read) })); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, "vm-a"); st != driver.StateCreated {
		t.Errorf("state after create %q, want created", st)
	}
	if err := d.Start(ctx, "vm-a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, "vm-a"); st != driver.StateRunning {
		t.Errorf("state after start %q, want running", st)
	}

	srv := launcher.server("vm-a")
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
	conn, err := net.Dial("unix", filepath.Join(run, "vm-a", "v.sock_1024"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(conn)
	conn.Close() //nolint:errcheck,gosec // read in full
	if err != nil {
		t.Fatal(err)
	}
	var got driver.GuestConfig
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("guest config %q: %v", data, err)
	}
	if got.Token != token || got.JobHandle != "handle-1" {
		t.Errorf("guest read %+v", got)
	}
	<-read
	if _, err := net.Dial("unix", filepath.Join(run, "vm-a", "v.sock_1024")); err == nil {
		t.Error("the guest config could be read a second time")
	}

	// The token went nowhere else: not to Firecracker's API (boot args, MMDS, ...) and not
	// into any file of the VM's.
	for _, r := range srv.Requests() {
		if strings.Contains(r.Body, token) || strings.Contains(r.Path, token) {
			t.Errorf("the token was sent to Firecracker: %s %s %s", r.Method, r.Path, r.Body)
		}
	}
	assertNoFileHolds(t, run, token)
	info, err := os.Stat(filepath.Join(run, "vm-a"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("VM directory mode %o, want 700", perm)
	}

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
	base, _ := os.ReadFile(rootfs)
	if string(base) != "base image" {
		t.Errorf("base image changed: %q", base)
	}
}

func TestDestroyBeforeTheGuestReadsDropsTheToken(t *testing.T) {
	ctx := context.Background()
	launcher := newLauncher(t)
	run := t.TempDir()
	d, err := New(Config{RunDir: run, Binary: "firecracker", Launcher: launcher})
	if err != nil {
		t.Fatal(err)
	}
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
	launcher := newLauncher(t)
	d, err := New(Config{RunDir: t.TempDir(), Binary: "firecracker", Launcher: launcher})
	if err != nil {
		t.Fatal(err)
	}
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-c", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	launcher.server("vm-c").Close() //nolint:errcheck,gosec // the process "exits"
	if st, _ := d.State(ctx, "vm-c"); st != driver.StateStopped {
		t.Errorf("state %q, want stopped", st)
	}
}

func TestJailedPathsAreInsideTheChroot(t *testing.T) {
	ctx := context.Background()
	launcher := newLauncher(t)
	base := t.TempDir()
	j := &Jailer{Binary: "/usr/bin/jailer", ChrootBase: base, UID: os.Getuid(), GID: os.Getgid(), ParentCgroup: "forgejo-runner-vms"}
	d, err := New(Config{Jailer: j, Binary: "/usr/bin/firecracker", Launcher: launcher})
	if err != nil {
		t.Fatal(err)
	}
	kernel, rootfs := images(t)
	if err := d.Create(ctx, spec("vm-j", kernel, rootfs, nil)); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "firecracker", "vm-j", "root")
	for _, name := range []string{"vmlinux", "rootfs.ext4", "firecracker.socket", "v.sock_1024"} {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("jail lacks %s: %v", name, err)
		}
	}
	for _, r := range launcher.server("vm-j").Requests() {
		if strings.Contains(r.Body, base) {
			t.Errorf("a host path reached the jailed Firecracker: %s %s", r.Path, r.Body)
		}
	}
	argv := strings.Join(launcher.launches[0].Argv, " ")
	for _, want := range []string{"--id vm-j", "--exec-file /usr/bin/firecracker", "--chroot-base-dir " + base,
		"--cgroup-version 2", "--cgroup cpu.max=200000 100000", "--parent-cgroup forgejo-runner-vms", "-- --api-sock /firecracker.socket"} {
		if !strings.Contains(argv, want) {
			t.Errorf("jailer argv %q lacks %q", argv, want)
		}
	}
	if err := d.Destroy(ctx, "vm-j"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker", "vm-j")); !os.IsNotExist(err) {
		t.Errorf("jail left behind: %v", err)
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
