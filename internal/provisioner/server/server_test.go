package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	clocktesting "k8s.io/utils/clock/testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fctest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls/mtlstest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/server"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
	pb "git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisionerpb/provisionerv1"
)

const (
	opA   = "spiffe://brooktrails.org/ns/a/sa/forgejo-runner-operator"
	opB   = "spiffe://brooktrails.org/ns/b/sa/forgejo-runner-operator"
	token = "runner-token-7c1e9d-do-not-leak"
)

// host is one VM host: its directories, its "processes" and a provisioner that can be
// restarted over them.
type host struct {
	t        *testing.T
	clock    *clocktesting.FakeClock
	launcher *fctest.Launcher
	stateDir string
	runDir   string
	imageDir string
	ca       *mtlstest.CA
	files    *mtls.Files
	vms      *vm.Manager
	srv      *grpc.Server
	addr     string

	eventsMu sync.Mutex
	events   []vm.Event
}

// moments lists a VM's events as "Kind" or "Kind/Reason", in order.
func (h *host) moments(id string) string {
	h.eventsMu.Lock()
	defer h.eventsMu.Unlock()
	var out []string
	for _, ev := range h.events {
		if ev.Record.ID != id {
			continue
		}
		m := string(ev.Kind)
		if ev.Reason != "" {
			m += "/" + ev.Reason
		}
		out = append(out, m)
	}
	return strings.Join(out, " ")
}

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{t: t, clock: clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)),
		launcher: fctest.NewLauncher(t), stateDir: t.TempDir(), runDir: t.TempDir(), imageDir: t.TempDir()}
	for name, data := range map[string]string{"vmlinux-6.1": "kernel", "debian-runner.ext4": "base image"} {
		if err := os.WriteFile(filepath.Join(h.imageDir, name), []byte(data), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	h.ca = mtlstest.NewCA(t, "ca", now)
	leaf := h.ca.Issue(t, mtlstest.Opts{CN: "vmhost", Server: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	certF, keyF, caF := mtlstest.WriteFiles(t, t.TempDir(), leaf, h.ca.PEM)
	files, err := mtls.New(mtls.Config{CertFile: certF, KeyFile: keyF, CAFile: caF, AllowedIdentities: []string{opA, opB}, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	h.files = files
	h.start()
	return h
}

// start runs a provisioner over the host's directories, recovering what an earlier one left.
func (h *host) start() {
	t := h.t
	drv, err := firecracker.New(firecracker.Config{RunDir: h.runDir, Binary: "firecracker", Launcher: h.launcher})
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	h.vms, err = vm.New(vm.Config{Driver: drv, Store: store, Clock: h.clock, ImageDir: h.imageDir, VCPUs: 4, MemoryMiB: 2048,
		MinLease: time.Minute, DefaultLease: 5 * time.Minute, MaxLease: time.Hour, Logger: logr.Discard(),
		Events: func(ev vm.Event) { h.eventsMu.Lock(); h.events = append(h.events, ev); h.eventsMu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.vms.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := server.New(h.vms)
	srv.Follow = func(ctx context.Context) error { return ctx.Err() } // tests read what is there
	h.srv = grpc.NewServer(h.files.ServerOptions()...)
	pb.RegisterProvisionerServiceServer(h.srv, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	go h.srv.Serve(ln) //nolint:errcheck,gosec // stopped by stop
	t.Cleanup(h.srv.Stop)
}

func (h *host) stop() { h.srv.Stop() }

func (h *host) client(identity string) pb.ProvisionerServiceClient {
	t := h.t
	now := time.Now()
	cert := h.ca.Issue(t, mtlstest.Opts{URIs: []string{identity}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}).TLS(t)
	pool := x509.NewCertPool()
	pool.AddCert(h.ca.Cert)
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) //nolint:errcheck,gosec // test client
	return pb.NewProvisionerServiceClient(conn)
}

func createReq(key string) *pb.CreateVMRequest {
	return &pb.CreateVMRequest{
		IdempotencyKey: key,
		Spec:           &pb.VMSpec{Vcpus: 2, MemoryMib: 512, Kernel: "vmlinux-6.1", RootfsImage: "debian-runner.ext4"},
		Runner: &pb.Runner{ForgejoUrl: "https://forgejo.example", RegistrationUuid: "uuid-" + key,
			Labels: []string{"debian"}, JobHandle: "handle-" + key},
		RunnerToken:   token,
		Owner:         &pb.Owner{PoolNamespace: "ci", PoolName: "vms", RunnerName: "vms-" + key},
		LeaseDuration: durationpb.New(10 * time.Minute),
	}
}

// guestReads plays the guest: it reads its configuration over the vsock port.
func (h *host) guestReads(id string) string {
	h.t.Helper()
	conn, err := net.Dial("unix", filepath.Join(h.runDir, id, "v.sock_1024"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close() //nolint:errcheck // read in full
	data, err := io.ReadAll(conn)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(data)
}

func code(err error) codes.Code { return status.Code(err) }

func TestCreateIsIdempotentAndOwned(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	a, b := h.client(opA), h.client(opB)

	first, err := a.CreateVM(ctx, createReq("job-1"))
	if err != nil {
		t.Fatal(err)
	}
	vm1 := first.GetVm()
	if !first.GetCreated() || vm1.GetState() != pb.VMState_VM_STATE_RUNNING || vm1.GetOwner().GetOperator() != opA || vm1.GetDriver() != "firecracker" {
		t.Fatalf("first create: %v", first)
	}
	if got := vm1.GetLeaseExpireTime().AsTime(); !got.Equal(h.clock.Now().Add(10 * time.Minute)) {
		t.Errorf("lease expires %s", got)
	}
	again, err := a.CreateVM(ctx, createReq("job-1"))
	if err != nil || again.GetCreated() || again.GetVm().GetId() != vm1.GetId() {
		t.Fatalf("retry: %v, %v", again, err)
	}
	changed := createReq("job-1")
	changed.Spec.Vcpus = 1
	if _, err := a.CreateVM(ctx, changed); code(err) != codes.AlreadyExists {
		t.Errorf("same key, other shape: %v", err)
	}
	spoof := createReq("job-9")
	spoof.Owner.Operator = opB
	if _, err := a.CreateVM(ctx, spoof); code(err) != codes.PermissionDenied {
		t.Errorf("create in another operator's name: %v", err)
	}
	bad := createReq("job-8")
	bad.Spec.Kernel = "../../etc/passwd"
	if _, err := a.CreateVM(ctx, bad); code(err) != codes.InvalidArgument {
		t.Errorf("kernel outside the image directory: %v", err)
	}

	// Another operator neither sees nor touches it, and its own key space is separate.
	if _, err := b.GetVM(ctx, &pb.GetVMRequest{Id: vm1.GetId()}); code(err) != codes.NotFound {
		t.Errorf("other operator's get: %v", err)
	}
	if _, err := b.DeleteVM(ctx, &pb.DeleteVMRequest{Id: vm1.GetId()}); code(err) != codes.NotFound {
		t.Errorf("other operator's delete: %v", err)
	}
	if list, _ := b.ListVMs(ctx, &pb.ListVMsRequest{}); len(list.GetVms()) != 0 {
		t.Errorf("other operator lists %v", list.GetVms())
	}
	if resp, err := b.CreateVM(ctx, createReq("job-1")); err != nil || !resp.GetCreated() {
		t.Errorf("other operator's same key: %v, %v", resp, err)
	}

	list, err := a.ListVMs(ctx, &pb.ListVMsRequest{PoolNamespace: "ci", PoolName: "vms"})
	if err != nil || len(list.GetVms()) != 1 {
		t.Fatalf("list: %v, %v", list, err)
	}
	if list, _ := a.ListVMs(ctx, &pb.ListVMsRequest{PoolName: "other"}); len(list.GetVms()) != 0 {
		t.Errorf("filter by pool: %v", list.GetVms())
	}

	capacity, err := a.GetCapacity(ctx, &pb.GetCapacityRequest{})
	if err != nil || capacity.GetVcpusUsed() != 4 || capacity.GetVcpusTotal() != 4 || capacity.GetMemoryMibUsed() != 1024 || capacity.GetVms() != 2 {
		t.Fatalf("capacity: %v, %v", capacity, err)
	}
	if _, err := a.CreateVM(ctx, createReq("job-2")); code(err) != codes.ResourceExhausted {
		t.Errorf("create past capacity: %v", err)
	}

	// The guest takes its token; no answer or record carries it.
	if cfg := h.guestReads(vm1.GetId()); !strings.Contains(cfg, token) {
		t.Fatalf("guest read %q", cfg)
	}
	got, err := a.GetVM(ctx, &pb.GetVMRequest{Id: vm1.GetId()})
	if err != nil || !got.GetVm().GetTokenDelivered() {
		t.Fatalf("after the guest read: %v, %v", got, err)
	}
	for _, answer := range []string{protojson.Format(first), protojson.Format(got), protojson.Format(list)} {
		if strings.Contains(answer, token) {
			t.Errorf("an answer carries the token: %s", answer)
		}
	}
	entries, _ := os.ReadDir(h.stateDir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(h.stateDir, e.Name()))
		if strings.Contains(string(data), token) {
			t.Errorf("state file %s holds the token", e.Name())
		}
	}

	// Logs: the console as the VM log holds it (console| prefix).
	stream, err := a.StreamLogs(ctx, &pb.StreamLogsRequest{Id: vm1.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		logs.Write(msg.GetData())
	}
	if logs.String() != fctest.ConsoleLine {
		t.Errorf("logs %q", logs.String())
	}

	if _, err := a.DeleteVM(ctx, &pb.DeleteVMRequest{Id: vm1.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetVM(ctx, &pb.GetVMRequest{Id: vm1.GetId()}); code(err) != codes.NotFound {
		t.Errorf("get after delete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.runDir, vm1.GetId())); !os.IsNotExist(err) {
		t.Errorf("VM directory after delete: %v", err)
	}
}

func TestLapsedLeasesAreReaped(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	a := h.client(opA)
	kept, err := a.CreateVM(ctx, createReq("kept"))
	if err != nil {
		t.Fatal(err)
	}
	lapsing, err := a.CreateVM(ctx, createReq("lapsing"))
	if err != nil {
		t.Fatal(err)
	}

	h.clock.Step(9 * time.Minute)
	renewed, err := a.RenewLeases(ctx, &pb.RenewLeasesRequest{Ids: []string{kept.GetVm().GetId(), "vm-nonexistent"}, LeaseDuration: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(renewed.GetVms()) != 1 || len(renewed.GetMissingIds()) != 1 || renewed.GetMissingIds()[0] != "vm-nonexistent" {
		t.Fatalf("renew: %v", renewed)
	}
	h.vms.Reap(ctx)
	if list, _ := a.ListVMs(ctx, &pb.ListVMsRequest{}); len(list.GetVms()) != 2 {
		t.Fatalf("reaped before any lease lapsed: %v", list.GetVms())
	}

	h.clock.Step(time.Minute) // lapsing's lease ends now; kept's in 9 minutes
	h.vms.Reap(ctx)
	if _, err := a.GetVM(ctx, &pb.GetVMRequest{Id: lapsing.GetVm().GetId()}); code(err) != codes.NotFound {
		t.Errorf("lapsed VM still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.runDir, lapsing.GetVm().GetId())); !os.IsNotExist(err) {
		t.Errorf("lapsed VM's directory: %v", err)
	}
	if h.launcher.Server(lapsing.GetVm().GetId()) != nil {
		t.Error("lapsed VM's process still runs")
	}
	if _, err := a.GetVM(ctx, &pb.GetVMRequest{Id: kept.GetVm().GetId()}); err != nil {
		t.Errorf("renewed VM reaped: %v", err)
	}

	// A VM whose hypervisor exited is reported stopped and reaped when its lease lapses.
	h.launcher.Exit(kept.GetVm().GetId())
	h.vms.Reap(ctx)
	got, err := a.GetVM(ctx, &pb.GetVMRequest{Id: kept.GetVm().GetId()})
	if err != nil || got.GetVm().GetState() != pb.VMState_VM_STATE_STOPPED {
		t.Fatalf("after its process exited: %v, %v", got, err)
	}
	h.clock.Step(9 * time.Minute)
	h.vms.Reap(ctx)
	if entries, _ := os.ReadDir(h.runDir); len(entries) != 0 {
		t.Errorf("left on the host: %v", entries)
	}
	if entries, _ := os.ReadDir(h.stateDir); len(entries) != 0 {
		t.Errorf("records left: %v", entries)
	}
	for id, want := range map[string]string{
		lapsing.GetVm().GetId(): "Created Started Destroyed/LeaseLapsed",
		kept.GetVm().GetId():    "Created Started Stopped Destroyed/LeaseLapsed",
	} {
		if got := h.moments(id); got != want {
			t.Errorf("%s's events: %s, want %s", id, got, want)
		}
	}
}

func TestRestartAdoptsOrDestroys(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	a := h.client(opA)
	adopted, err := a.CreateVM(ctx, createReq("adopted"))
	if err != nil {
		t.Fatal(err)
	}
	h.guestReads(adopted.GetVm().GetId())
	undelivered, err := a.CreateVM(ctx, createReq("undelivered"))
	if err != nil {
		t.Fatal(err)
	}
	h.stop()

	// Between the runs, one more VM is made by hand and its process dies: a crash's leftovers.
	h.start()
	crashed, err := h.client(opA).CreateVM(ctx, createReq("crashed"))
	if err == nil {
		h.guestReads(crashed.GetVm().GetId())
		h.launcher.Exit(crashed.GetVm().GetId())
	} else {
		t.Fatal(err)
	}
	h.stop()

	h.start()
	a = h.client(opA)
	list, err := a.ListVMs(ctx, &pb.ListVMsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetVms()) != 1 || list.GetVms()[0].GetId() != adopted.GetVm().GetId() || list.GetVms()[0].GetState() != pb.VMState_VM_STATE_RUNNING {
		t.Fatalf("after restart: %v", list.GetVms())
	}
	for _, id := range []string{undelivered.GetVm().GetId(), crashed.GetVm().GetId()} {
		if _, err := os.Stat(filepath.Join(h.runDir, id)); !os.IsNotExist(err) {
			t.Errorf("%s left on the host: %v", id, err)
		}
		if h.launcher.Server(id) != nil {
			t.Errorf("%s's process still runs", id)
		}
	}
	// The adopted VM is still idempotently found by its key.
	again, err := a.CreateVM(ctx, createReq("adopted"))
	if err != nil || again.GetCreated() || again.GetVm().GetId() != adopted.GetVm().GetId() {
		t.Fatalf("retry after restart: %v, %v", again, err)
	}
	for id, want := range map[string]string{
		adopted.GetVm().GetId():     "Created Started Adopted Adopted",
		undelivered.GetVm().GetId(): "Created Started Destroyed/NotAdoptable",
		crashed.GetVm().GetId():     "Created Started Destroyed/NotAdoptable",
	} {
		if got := h.moments(id); got != want {
			t.Errorf("%s's events: %s, want %s", id, got, want)
		}
	}
}
