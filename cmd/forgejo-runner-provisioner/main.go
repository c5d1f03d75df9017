// Command forgejo-runner-provisioner is the agent on a VM host: a gRPC server, reachable only
// over mutual TLS, that makes one throwaway microVM per Forgejo runner through a hypervisor
// driver, keeps its VMs' records in a state directory, and destroys VMs whose lease lapsed.
// docs/provisioner.md describes it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/utils/clock"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/qemu"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/server"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vmrecord"
	pb "git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisionerpb/provisionerv1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/version"
)

// options are every flag, validated before anything starts.
type options struct {
	listen, metricsListen             string
	certFile, keyFile, caFile         string
	allowed                           string
	stateDir, runDir, imageDir        string
	driver                            string
	firecrackerBin, jailerBin, chroot string
	jailNetNS, jailParentCgroup       string
	jailNewPIDNS                      bool
	jailUID, jailGID                  int
	tapPrefix, tapSubnet              string
	tapNetwork                        *driver.GuestNetwork
	qemuBin, qemuImg, qemuAccel       string
	qemuInitrd, qemuBootArgs          string
	qemuForwards                      []string
	vcpus                             uint
	memoryMiB                         uint64
	minLease, defaultLease, maxLease  time.Duration
	reapInterval                      time.Duration
	tlsRecheck                        time.Duration
	eventLog, eventLogFsync           string
	eventLogMaxMiB, vmLogMaxMiB       int64
	eventLogMaxFiles                  int
	showVersion                       bool
}

func parse(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("forgejo-runner-provisioner", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", ":7443", "gRPC address (mutual TLS only)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:9464", "address of /metrics (plain HTTP; empty disables)")
	fs.StringVar(&o.certFile, "tls-cert", "", "serving certificate (PEM); re-read when it changes")
	fs.StringVar(&o.keyFile, "tls-key", "", "serving key (PEM)")
	fs.StringVar(&o.caFile, "tls-client-ca", "", "CA bundle client certificates must chain to (PEM)")
	fs.StringVar(&o.allowed, "allowed-clients", "", "comma-separated client identities allowed: URI SANs (spiffe://…) or subject CNs")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/forgejo-runner-provisioner/state", "VM records")
	fs.StringVar(&o.runDir, "run-dir", "/var/lib/forgejo-runner-provisioner/vms", "per-VM directories (overlays, sockets, logs) when not jailed")
	fs.StringVar(&o.imageDir, "image-dir", "/var/lib/forgejo-runner-provisioner/images", "kernels and base root filesystems requests may name")
	fs.StringVar(&o.driver, "driver", "firecracker", "hypervisor driver: firecracker or qemu")
	fs.StringVar(&o.qemuBin, "qemu", "", "qemu-system-x86_64 executable (default: from PATH)")
	fs.StringVar(&o.qemuImg, "qemu-img", "", "qemu-img executable (default: from PATH)")
	fs.StringVar(&o.qemuAccel, "qemu-accel", "kvm", "QEMU accelerator: kvm, or tcg where there is no usable KVM (slow)")
	fs.StringVar(&o.qemuInitrd, "qemu-initrd", "", "initramfs given to every QEMU VM (a host path; empty: the init is in the root filesystem)")
	fs.StringVar(&o.qemuBootArgs, "qemu-boot-args", qemu.DefaultBootArgs, "QEMU VMs' kernel command line (never a secret)")
	fs.Func("qemu-forward", "without -tap-prefix: GUEST=HOST makes guest address GUEST (10.0.2.x:port) reach HOST (host:port), and nothing else (repeatable)", func(v string) error {
		g, h, ok := strings.Cut(v, "=")
		if !ok || g == "" || h == "" {
			return fmt.Errorf("want GUEST=HOST, got %q", v)
		}
		o.qemuForwards = append(o.qemuForwards, v)
		return nil
	})
	fs.StringVar(&o.firecrackerBin, "firecracker", "/usr/local/bin/firecracker", "firecracker executable")
	fs.StringVar(&o.jailerBin, "jailer", "", "jailer executable; when set, Firecracker runs jailed")
	fs.StringVar(&o.chroot, "jailer-chroot-base", "/srv/jailer", "jailer --chroot-base-dir")
	fs.IntVar(&o.jailUID, "jailer-uid", 0, "uid Firecracker runs as under the jailer")
	fs.IntVar(&o.jailGID, "jailer-gid", 0, "gid Firecracker runs as under the jailer")
	fs.StringVar(&o.jailNetNS, "jailer-netns", "", "jailer --netns: the network namespace (a path such as /var/run/netns/forgejo-vms) the VMs' taps live in; empty: the provisioner's")
	fs.StringVar(&o.jailParentCgroup, "jailer-parent-cgroup", "forgejo-runner-vms", "jailer --parent-cgroup: each VM's cgroup is <cgroup v2 root>/<this>/<vm id>")
	fs.BoolVar(&o.jailNewPIDNS, "jailer-new-pid-ns", true, "jailer --new-pid-ns: each Firecracker in a PID namespace of its own")
	fs.StringVar(&o.tapPrefix, "tap-prefix", "", "VMs get tap device <prefix><slot> (made by the host's network setup); empty: no network (Firecracker) or QEMU user networking")
	fs.StringVar(&o.tapSubnet, "tap-subnet", "", "with -tap-prefix: the bridge's IPv4 subnet; the bridge has its first address (the VMs' gateway), the VM in slot s has address .10+s")
	fs.UintVar(&o.vcpus, "vcpus", uint(runtime.NumCPU()), "vCPUs this host gives VMs in total")
	fs.Uint64Var(&o.memoryMiB, "memory-mib", 0, "MiB of memory this host gives VMs in total (required)")
	fs.DurationVar(&o.minLease, "min-lease", time.Minute, "shortest lease granted")
	fs.DurationVar(&o.defaultLease, "default-lease", 10*time.Minute, "lease when a request names none")
	fs.DurationVar(&o.maxLease, "max-lease", 2*time.Hour, "longest lease granted")
	fs.DurationVar(&o.reapInterval, "reap-interval", 15*time.Second, "how often lapsed leases and exited VMs are looked for")
	fs.StringVar(&o.eventLog, "event-log-path", "/var/lib/forgejo-runner-provisioner/events.jsonl", "every VM's lifecycle events as JSON lines (empty: none)")
	fs.StringVar(&o.eventLogFsync, "event-log-fsync", string(jsonlog.FsyncInterval), "when the event log is flushed to disk: always, interval (every second) or never")
	fs.Int64Var(&o.eventLogMaxMiB, "event-log-max-mib", 100, "size in MiB at which the event log is rotated to FILE.1, FILE.2, …; 0 never rotates")
	fs.IntVar(&o.eventLogMaxFiles, "event-log-max-files", 5, "rotated event log files kept")
	fs.Int64Var(&o.vmLogMaxMiB, "vm-log-max-mib", 256, "a VM's log (console and runner output) stops growing at this size in MiB, and says so; 0: no limit")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.DurationVar(&o.tlsRecheck, "tls-recheck", 10*time.Second, "how long TLS files read last are used before a handshake reads them again")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.showVersion {
		return o, nil
	}
	var problems []string
	if o.certFile == "" || o.keyFile == "" || o.caFile == "" {
		problems = append(problems, "-tls-cert, -tls-key and -tls-client-ca are required: the provisioner serves mutual TLS only")
	}
	if strings.TrimSpace(o.allowed) == "" {
		problems = append(problems, "-allowed-clients is required")
	}
	if o.driver != "firecracker" && o.driver != "qemu" {
		problems = append(problems, fmt.Sprintf("-driver %q: firecracker or qemu", o.driver))
	}
	if len(o.qemuForwards) > 0 && (o.driver != "qemu" || o.tapPrefix != "") {
		problems = append(problems, "-qemu-forward needs -driver qemu without -tap-prefix (user networking)")
	}
	if (o.tapPrefix == "") != (o.tapSubnet == "") {
		problems = append(problems, "-tap-prefix and -tap-subnet go together: a guest on a tap is given its address and gateway from the subnet (its init has no DHCP client)")
	} else if o.tapSubnet != "" {
		n, err := driver.ParseGuestNetwork(o.tapSubnet)
		if err != nil {
			problems = append(problems, "-tap-subnet: "+err.Error())
		}
		o.tapNetwork = &n
	}
	if o.memoryMiB == 0 || o.vcpus == 0 {
		problems = append(problems, "-vcpus and -memory-mib must be above zero")
	}
	if o.jailNetNS != "" && !filepath.IsAbs(o.jailNetNS) {
		problems = append(problems, "-jailer-netns must be an absolute path such as /var/run/netns/forgejo-vms")
	}
	if o.jailerBin != "" && (o.jailUID == 0 || o.jailGID == 0) {
		problems = append(problems, "-jailer-uid and -jailer-gid must name an unprivileged user")
	}
	if _, err := jsonlog.ParseFsyncPolicy(o.eventLogFsync); err != nil {
		problems = append(problems, "-event-log-fsync: "+err.Error())
	}
	if o.vmLogMaxMiB < 0 {
		problems = append(problems, "-vm-log-max-mib must be 0 or more")
	}
	if o.eventLogMaxMiB < 0 || o.eventLogMaxFiles < 1 {
		problems = append(problems, "-event-log-max-mib must be 0 or more and -event-log-max-files at least 1")
	}
	if o.eventLog != "" && filepath.Clean(filepath.Dir(o.eventLog)) == filepath.Clean(o.stateDir) {
		problems = append(problems, "-event-log-path must not be inside -state-dir (it holds only VM records)")
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

func main() {
	// `relay <addr>`: what QEMU runs for each guest connection to a -qemu-forward address, with
	// the connection as standard input and output.
	if len(os.Args) == 3 && os.Args[1] == "relay" {
		if err := qemu.Relay(os.Args[2], os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		return
	}
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	o, err := parse(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		log.Error(err, "invalid flags")
		os.Exit(2)
	}
	if o.showVersion {
		fmt.Println(version.String("forgejo-runner-provisioner"))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error(err, "provisioner failed")
		os.Exit(1)
	}
}

func newDriver(o *options, log logr.Logger) (driver.Driver, error) {
	if o.driver == "qemu" {
		cfg := qemu.Config{RunDir: o.runDir, QEMU: o.qemuBin, QEMUImg: o.qemuImg, Accel: o.qemuAccel, Initrd: o.qemuInitrd,
			BootArgs: o.qemuBootArgs, TapPrefix: o.tapPrefix, TapNetwork: o.tapNetwork, LogLimit: o.vmLogMaxMiB << 20, Logger: log.WithName("qemu")}
		if len(o.qemuForwards) > 0 {
			self, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("own executable, for -qemu-forward: %w", err)
			}
			for _, f := range o.qemuForwards {
				g, h, _ := strings.Cut(f, "=")
				cfg.Forwards = append(cfg.Forwards, qemu.Forward{Guest: g, Command: []string{self, "relay", h}})
			}
		}
		return qemu.New(cfg)
	}
	fcCfg := firecracker.Config{RunDir: o.runDir, Binary: o.firecrackerBin, TapPrefix: o.tapPrefix, TapNetwork: o.tapNetwork,
		LogLimit: o.vmLogMaxMiB << 20, Logger: log.WithName("firecracker")}
	if o.jailerBin != "" {
		fcCfg.RunDir = ""
		fcCfg.Jailer = &firecracker.Jailer{Binary: o.jailerBin, ChrootBase: o.chroot, UID: o.jailUID, GID: o.jailGID,
			NetNS: o.jailNetNS, ParentCgroup: o.jailParentCgroup, NewPIDNS: o.jailNewPIDNS}
	}
	return firecracker.New(fcCfg)
}

// maxSlots is how many VMs the tap subnet has addresses for; no bound without taps.
func maxSlots(o *options) int {
	if o.tapNetwork == nil {
		return 0
	}
	return o.tapNetwork.Slots()
}

func run(ctx context.Context, o *options, log logr.Logger) error {
	log.Info("starting forgejo-runner-provisioner", "version", version.Version, "driver", o.driver, "listen", o.listen)
	var allowed []string
	for _, a := range strings.Split(o.allowed, ",") {
		if a = strings.TrimSpace(a); a != "" {
			allowed = append(allowed, a)
		}
	}
	files, err := mtls.New(mtls.Config{CertFile: o.certFile, KeyFile: o.keyFile, CAFile: o.caFile,
		AllowedIdentities: allowed, RecheckAfter: o.tlsRecheck, Logger: log.WithName("mtls")})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), files.Expiry())

	var eventLog jsonlog.Options
	if o.eventLog != "" {
		if err := os.MkdirAll(filepath.Dir(o.eventLog), 0o700); err != nil {
			return fmt.Errorf("event log directory: %w", err)
		}
		eventLog = jsonlog.Options{Path: o.eventLog, Fsync: jsonlog.FsyncPolicy(o.eventLogFsync),
			MaxSize: o.eventLogMaxMiB << 20, MaxFiles: o.eventLogMaxFiles}
	}
	rec, err := vmrecord.New(vmrecord.Options{EventLog: eventLog, Logger: log.WithName("events")}, reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := rec.Close(); err != nil {
			log.Error(err, "closing the event log")
		}
	}()

	drv, err := newDriver(o, log)
	if err != nil {
		return err
	}
	store, err := state.Open(o.stateDir)
	if err != nil {
		return err
	}
	vms, err := vm.New(vm.Config{Driver: drv, Store: store, Clock: clock.RealClock{}, ImageDir: filepath.Clean(o.imageDir),
		VCPUs: uint32(o.vcpus), MemoryMiB: o.memoryMiB, //nolint:gosec // a host's vCPU count fits
		MaxSlots: maxSlots(o), MinLease: o.minLease, DefaultLease: o.defaultLease, MaxLease: o.maxLease, Logger: log.WithName("vm"), Events: rec.Observe})
	if err != nil {
		return err
	}
	reg.MustRegister(vmrecord.Capacity{VMs: vms})
	if err := vms.Recover(ctx); err != nil {
		return err
	}
	go vms.RunReaper(ctx, o.reapInterval)

	srv := grpc.NewServer(files.ServerOptions()...)
	pb.RegisterProvisionerServiceServer(srv, server.New(vms))
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(ln) }()
	var metrics *http.Server
	if o.metricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metrics = &http.Server{Addr: o.metricsListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := metrics.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-errs:
		srv.Stop()
		return err
	}
	// VMs keep running: a restarted provisioner adopts them (docs/provisioner.md).
	log.Info("shutting down; VMs are left running for the next start to adopt")
	// Calls in flight get a few seconds; a following log stream would never end on its own.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
		<-stopped
	}
	if metrics != nil {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = metrics.Shutdown(shutdownCtx)
	}
	return nil
}
