// Package provisioner_test runs forgejo-runner-provisioner as it runs on a VM host: the binary
// built from this checkout, serving mutual TLS, with the QEMU driver booting real guests under
// TCG (Debian's kernel and an initramfs built in the test: the guest init and the simulated
// forgejo-runner), reached only through its gRPC API. The guests run jobs of the Forgejo
// simulator through the one forwarded address. Nothing is skipped: without QEMU or a kernel the
// tests fail and say what to install.
package provisioner_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/qemu"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest/guesttest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls/mtlstest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vmrecord"
	pb "git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisionerpb/provisionerv1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
)

const (
	adminToken = "provisioner-e2e-admin-token"
	operatorID = "spiffe://e2e.example/ns/forgejo-runners/sa/forgejo-runner-operator"
	// guestForgejo is where guests find Forgejo: forwarded by QEMU, and only it, to the simulator.
	guestForgejo = "10.0.2.100:3000"
	kernelName   = "vmlinuz"
	rootfsName   = "base.raw"
)

var (
	buildOnce sync.Once
	binary    string
	image     guesttest.Image
	workDir   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if workDir != "" {
		os.RemoveAll(workDir) //nolint:errcheck,gosec // best effort
	}
	os.Exit(code)
}

// build compiles the provisioner and the guest once per test binary.
func build(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		workDir, buildErr = os.MkdirTemp("", "prov-e2e-")
		if buildErr != nil {
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(workDir, "forgejo-runner-provisioner")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/forgejo-runner-provisioner") //nolint:gosec // fixed package
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build the provisioner: %w\n%s", err, out)
			return
		}
		image = guesttest.Build(t, workDir)
	})
	if buildErr != nil || image.Initrd == "" {
		t.Fatalf("the provisioner or its test guest could not be built: %v", buildErr)
	}
}

// host is one VM host's directories and the provisioner serving them; it can be restarted.
type host struct {
	t                                     *testing.T
	sim                                   *forgejosim.Server
	forgejo                               *forgejo.Client
	stateDir, runDir, imageDir, eventLog  string
	certFile, keyFile, caFile, addr, mets string
	ca                                    *mtlstest.CA
	bootArgs, simHost                     string
	proc                                  *exec.Cmd
	exited                                chan struct{}
	logs                                  *lockedBuffer
	client                                pb.ProvisionerServiceClient
}

func newHost(t *testing.T, extraBootArgs string) *host {
	t.Helper()
	build(t)
	sim, simURL := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: adminToken, Seed: 7})
	fc, err := forgejo.New(forgejo.Config{BaseURL: simURL, Token: adminToken, Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, sim: sim, forgejo: fc, stateDir: t.TempDir(), imageDir: t.TempDir(),
		eventLog: filepath.Join(t.TempDir(), "events.jsonl")}
	// Socket paths must fit in 108 bytes: a short run directory.
	h.runDir, err = os.MkdirTemp("", "pv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(h.runDir) }) //nolint:errcheck,gosec // best effort
	if err := os.Symlink(image.Kernel, filepath.Join(h.imageDir, kernelName)); err != nil {
		t.Fatal(err)
	}
	// Not a real kernel: QEMU refuses it, which is how a driver error is made here.
	if err := os.WriteFile(filepath.Join(h.imageDir, "broken-kernel"), []byte("not a kernel"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.imageDir, rootfsName), make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.ca = mtlstest.NewCA(t, "vm-host-ca", now)
	leaf := h.ca.Issue(t, mtlstest.Opts{CN: "vmhost", Server: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	h.certFile, h.keyFile, h.caFile = mtlstest.WriteFiles(t, t.TempDir(), leaf, h.ca.PEM)
	u, err := url.Parse(simURL)
	if err != nil {
		t.Fatal(err)
	}
	h.bootArgs = strings.Join([]string{qemu.DefaultBootArgs, image.BootArgs, extraBootArgs}, " ")
	h.simHost = u.Host
	h.start()
	return h
}

// start runs the provisioner over the host's directories, recovering what an earlier run left.
func (h *host) start() {
	t := h.t
	var err error
	if h.addr, err = operatorproc.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if h.mets, err = operatorproc.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	h.logs = &lockedBuffer{}
	h.proc = exec.Command(binary, //nolint:gosec // the binary built above
		"-listen", h.addr, "-metrics-listen", h.mets,
		"-tls-cert", h.certFile, "-tls-key", h.keyFile, "-tls-client-ca", h.caFile, "-allowed-clients", operatorID,
		"-state-dir", h.stateDir, "-run-dir", h.runDir, "-image-dir", h.imageDir,
		"-event-log-path", h.eventLog, "-event-log-fsync", "always",
		"-driver", "qemu", "-qemu-accel", "tcg", "-qemu-initrd", image.Initrd, "-qemu-boot-args", h.bootArgs,
		"-qemu-forward", guestForgejo+"="+h.simHost,
		"-vcpus", "2", "-memory-mib", "1024", "-reap-interval", "500ms")
	h.proc.Stdout, h.proc.Stderr = h.logs, h.logs
	if err := h.proc.Start(); err != nil {
		t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func() { h.proc.Wait(); close(h.exited) }() //nolint:errcheck,gosec // seen through exited
	t.Cleanup(func() { h.kill(syscall.SIGKILL) })
	h.client = h.dial()
	eventually.True(t, time.Minute, "the provisioner to serve", func() (bool, string) {
		select {
		case <-h.exited:
			t.Fatalf("the provisioner exited at start:\n%s", h.logs)
		default:
		}
		_, err := h.client.GetCapacity(t.Context(), &pb.GetCapacityRequest{})
		return err == nil, fmt.Sprint(err)
	})
}

// lockedBuffer holds the provisioner's output, written by exec's copier while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// kill ends the provisioner with sig and waits for it. Its VMs keep running: QEMU runs in
// process groups of its own.
func (h *host) kill(sig syscall.Signal) {
	select {
	case <-h.exited:
		return
	default:
	}
	_ = h.proc.Process.Signal(sig)
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		_ = h.proc.Process.Kill()
		<-h.exited
	}
}

func (h *host) dial() pb.ProvisionerServiceClient {
	t := h.t
	now := time.Now()
	cert := h.ca.Issue(t, mtlstest.Opts{URIs: []string{operatorID}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}).TLS(t)
	roots := x509.NewCertPool()
	roots.AddCert(h.ca.Cert)
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) //nolint:errcheck,gosec // test client
	return pb.NewProvisionerServiceClient(conn)
}

// runnerFor registers a runner and queues one job for it.
func (h *host) runnerFor(name string) (forgejo.Registration, forgejosim.Job) {
	h.t.Helper()
	reg, err := h.forgejo.RegisterRunner(h.t.Context(), name, "provisioner e2e", true)
	if err != nil {
		h.t.Fatalf("register: %v", err)
	}
	jobs, err := h.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"vm"}})
	if err != nil {
		h.t.Fatal(err)
	}
	return reg, jobs[0]
}

func createReq(key, kernel string, reg forgejo.Registration) *pb.CreateVMRequest {
	return &pb.CreateVMRequest{
		IdempotencyKey: key,
		Spec:           &pb.VMSpec{Vcpus: 1, MemoryMib: 256, Kernel: kernel, RootfsImage: rootfsName},
		Runner: &pb.Runner{ForgejoUrl: "http://" + guestForgejo, RegistrationUuid: reg.UUID,
			Labels: []string{"vm:host"}},
		RunnerToken:   reg.Token,
		Owner:         &pb.Owner{PoolNamespace: "ci", PoolName: "vms", RunnerName: "vms-" + key},
		LeaseDuration: durationpb.New(10 * time.Minute),
	}
}

// vmLog reads what StreamLogs has of a VM now.
func (h *host) vmLog(id string) string {
	stream, err := h.client.StreamLogs(h.t.Context(), &pb.StreamLogsRequest{Id: id})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for {
		msg, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				b.WriteString("\n[stream: " + err.Error() + "]")
			}
			return b.String()
		}
		b.Write(msg.GetData())
	}
}

func (h *host) waitLog(id, want string) {
	h.t.Helper()
	eventually.True(h.t, 5*time.Minute, fmt.Sprintf("%q in %s's log", want, id), func() (bool, string) {
		l := h.vmLog(id)
		return strings.Contains(l, want), l
	})
}

func (h *host) waitJob(id int64, status forgejosim.JobStatus) {
	h.t.Helper()
	eventually.True(h.t, 5*time.Minute, fmt.Sprintf("job %d to be %s", id, status), func() (bool, string) {
		j, _ := h.sim.Job(id)
		return j.Status == status, string(j.Status)
	})
}

// waitStopped waits for the VM to be reported stopped: its guest powered off after its runner.
func (h *host) waitStopped(id string) {
	h.t.Helper()
	eventually.True(h.t, 2*time.Minute, id+" to be reported stopped after its runner", func() (bool, string) {
		got, err := h.client.GetVM(h.t.Context(), &pb.GetVMRequest{Id: id})
		return err == nil && got.GetVm().GetState() == pb.VMState_VM_STATE_STOPPED, fmt.Sprint(got, err)
	})
}

// events reads the event log as "Kind" or "Kind/Reason" per VM.
func (h *host) events() map[string][]string {
	h.t.Helper()
	f, err := os.Open(h.eventLog)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close() //nolint:errcheck // read-only
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l vmrecord.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			h.t.Fatalf("event log line %q: %v", sc.Text(), err)
		}
		m := string(l.Event)
		if l.Reason != "" {
			m += "/" + l.Reason
		}
		out[l.VM] = append(out[l.VM], m)
	}
	return out
}

func (h *host) metrics() string {
	h.t.Helper()
	resp, err := http.Get("http://" + h.mets + "/metrics") //nolint:noctx // a test on loopback
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close() // read in full
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// processesOf lists the pids whose command line names the VM (QEMU is started with -name <id>).
func processesOf(id string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), "\x00"+id+"\x00") {
			if st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); !strings.Contains(string(st), ") Z ") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// assertNothingLeft checks the host holds nothing of any VM: no directory (overlay, sockets,
// logs), no record, no process.
func (h *host) assertNothingLeft(ids ...string) {
	h.t.Helper()
	eventually.True(h.t, 30*time.Second, "the host to be clean", func() (bool, string) {
		runs, _ := os.ReadDir(h.runDir)
		records, _ := os.ReadDir(h.stateDir)
		var procs []int
		for _, id := range ids {
			procs = append(procs, processesOf(id)...)
		}
		return len(runs) == 0 && len(records) == 0 && len(procs) == 0,
			fmt.Sprintf("run dir %v, records %v, processes %v", runs, records, procs)
	})
}

// TestVMRunsJobThroughTheAPI: over mutual TLS, the operator's calls make a real VM whose runner
// takes and finishes a job of the simulator; its log and its boot figures are there; deleting it
// leaves nothing on the host; a VM whose hypervisor refuses its kernel fails, and says so.
func TestVMRunsJobThroughTheAPI(t *testing.T) {
	h := newHost(t, guest.ParamProbe+"=192.0.2.1:80")
	ctx := t.Context()
	reg, job := h.runnerFor("e2e-one")

	resp, err := h.client.CreateVM(ctx, createReq("one", kernelName, reg))
	if err != nil {
		t.Fatalf("create: %v\n%s", err, h.logs)
	}
	id := resp.GetVm().GetId()
	if !resp.GetCreated() || resp.GetVm().GetState() != pb.VMState_VM_STATE_RUNNING {
		t.Fatalf("create answered %v", resp)
	}
	h.waitJob(job.ID, forgejosim.JobSuccess)
	h.waitLog(id, "guest event: runner-exited 0")
	h.waitStopped(id)
	log := h.vmLog(id)
	for _, want := range []string{"provisioner| log stream open for " + id, "guest| runner: ", "console| guest-init: up in",
		// Without frp.gw the guest has no route beyond its subnet: Forgejo's forward is all it reaches.
		"probe 192.0.2.1:80: unreachable: dial tcp 192.0.2.1:80: connect: network is unreachable"} {
		if !strings.Contains(log, want) {
			t.Errorf("VM log lacks %q", want)
		}
	}
	if strings.Contains(log, reg.Token) || strings.Contains(h.logs.String(), reg.Token) {
		t.Error("the runner token is in the VM's log or the provisioner's")
	}
	got, err := h.client.GetVM(ctx, &pb.GetVMRequest{Id: id})
	if err != nil || !got.GetVm().GetTokenDelivered() {
		t.Fatalf("token not reported delivered: %v, %v", got, err)
	}
	v := got.GetVm()
	created, ready, started, ended := v.GetCreateTime().AsTime(), v.GetGuestReadyTime().AsTime(), v.GetRunnerStartTime().AsTime(), v.GetRunnerExitTime().AsTime()
	if v.GetGuestReadyTime() == nil || v.GetRunnerStartTime() == nil || v.GetRunnerExitTime() == nil || v.GetRunnerExitCode() != 0 ||
		ready.Before(created) || started.Before(ready) || ended.Before(started) {
		t.Errorf("the VM's milestones are not created <= guest ready <= runner started <= runner exited (code 0): %v", v)
	}
	t.Logf("create -> guest ready %s, -> runner started %s, runner ran %s",
		ready.Sub(created).Round(time.Millisecond), started.Sub(created).Round(time.Millisecond), ended.Sub(started).Round(time.Millisecond))

	if _, err := h.client.DeleteVM(ctx, &pb.DeleteVMRequest{Id: id}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	h.assertNothingLeft(id)

	// A kernel QEMU cannot load: the create fails, its VM is reported failed, nothing runs.
	bad, err := h.client.CreateVM(ctx, createReq("broken", "broken-kernel", reg))
	if err != nil {
		t.Fatalf("create with a broken kernel: %v", err)
	}
	badID := bad.GetVm().GetId()
	if bad.GetVm().GetState() != pb.VMState_VM_STATE_FAILED || !strings.Contains(bad.GetVm().GetMessage(), "qemu") {
		t.Errorf("broken kernel: %v", bad.GetVm())
	}
	if l := h.vmLog(badID); !strings.Contains(l, "FailedPrecondition") || !strings.Contains(l, "qemu") {
		t.Errorf("logs of the failed VM: %s", l)
	}
	if _, err := h.client.DeleteVM(ctx, &pb.DeleteVMRequest{Id: badID}); err != nil {
		t.Fatalf("delete the failed VM: %v", err)
	}
	h.assertNothingLeft(id, badID)

	events := h.events()
	if got, want := strings.Join(events[id], " "), "Created Started GuestReady RunnerStarted RunnerExited Stopped Destroyed/Deleted"; got != want {
		t.Errorf("events of the VM: %s\nwant %s", got, want)
	}
	if got, want := strings.Join(events[badID], " "), "Created DriverError/create Failed/create Destroyed/Deleted"; got != want {
		t.Errorf("events of the failed VM: %s\nwant %s", got, want)
	}
	m := h.metrics()
	for _, want := range []string{
		`forgejo_runner_provisioner_vm_boot_seconds_count{driver="qemu",stage="guest_ready"} 1`,
		`forgejo_runner_provisioner_vm_boot_seconds_count{driver="qemu",stage="runner_started"} 1`,
		`forgejo_runner_provisioner_vm_lifetime_seconds_count{driver="qemu",reason="Deleted"} 2`,
		`forgejo_runner_provisioner_driver_errors_total{driver="qemu",operation="create"} 1`,
		`forgejo_runner_provisioner_vcpus{state="total"} 2`,
		`forgejo_runner_provisioner_vcpus{state="used"} 0`,
		`forgejo_runner_provisioner_certificate_expiry_timestamp_seconds{cert="server"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "forgejo_runner_provisioner_vm_boot_seconds_sum") {
			t.Log(l)
		}
	}
}

// TestRestartAdoptsRunningVMs: the provisioner is killed (SIGKILL: no goodbye) while a VM's
// runner is in the middle of its job, and another VM's hypervisor dies while it is down. The
// next start adopts the first (its log stream is taken up again: the runner's end reaches the
// log after the restart) and destroys the second, leaving nothing of it; the job succeeds;
// deleting the adopted VM leaves nothing.
func TestRestartAdoptsRunningVMs(t *testing.T) {
	h := newHost(t, "frp.sim_task=20s")
	ctx := t.Context()
	reg, job := h.runnerFor("e2e-adopt")
	kept, err := h.client.CreateVM(ctx, createReq("kept", kernelName, reg))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	keptID := kept.GetVm().GetId()
	other, _ := h.runnerFor("e2e-crash")
	crashed, err := h.client.CreateVM(ctx, createReq("crashed", kernelName, other))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	crashedID := crashed.GetVm().GetId()

	h.waitLog(keptID, "guest event: runner-started")
	h.waitJob(job.ID, forgejosim.JobRunning)
	h.kill(syscall.SIGKILL)
	for _, p := range processesOf(crashedID) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if len(processesOf(keptID)) == 0 {
		t.Fatal("the VM did not outlive the provisioner")
	}

	h.start()
	list, err := h.client.ListVMs(ctx, &pb.ListVMsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetVms()) != 1 || list.GetVms()[0].GetId() != keptID || list.GetVms()[0].GetState() != pb.VMState_VM_STATE_RUNNING {
		t.Fatalf("after the restart: %v", list.GetVms())
	}
	if _, err := h.client.GetVM(ctx, &pb.GetVMRequest{Id: crashedID}); status.Code(err) != codes.NotFound {
		t.Errorf("the VM whose hypervisor died: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.runDir, crashedID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead VM's directory is left: %v", err)
	}

	h.waitJob(job.ID, forgejosim.JobSuccess)
	h.waitLog(keptID, "guest event: runner-exited 0")
	h.waitStopped(keptID)
	if _, err := h.client.DeleteVM(ctx, &pb.DeleteVMRequest{Id: keptID}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	h.assertNothingLeft(keptID, crashedID)

	events := h.events()
	for id, want := range map[string]string{
		keptID:    "Created Started GuestReady RunnerStarted Adopted RunnerExited Stopped Destroyed/Deleted",
		crashedID: "Created Started Destroyed/NotAdoptable",
	} {
		got := events[id]
		// The crashed VM may have reached its guest's milestones before it was killed.
		if id == crashedID {
			got = dropKinds(got, "GuestReady", "RunnerStarted")
		}
		if strings.Join(got, " ") != want {
			t.Errorf("events of %s: %s\nwant %s", id, strings.Join(got, " "), want)
		}
	}
}

func dropKinds(events []string, kinds ...string) []string {
	var out []string
	for _, e := range events {
		drop := false
		for _, k := range kinds {
			drop = drop || e == k
		}
		if !drop {
			out = append(out, e)
		}
	}
	return out
}
