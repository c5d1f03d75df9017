// Package qemu is the provisioner's QEMU driver: one qemu-system-x86_64 process per VM (`-M pc`,
// any accelerator: KVM on a real host, TCG where there is none), booting a kernel (and an
// initramfs) with a per-VM qcow2 overlay of the read-only base image as its disk.
//
// The guest talks to the provisioner over two virtio-serial ports whose host ends are Unix
// sockets in the VM's 0700 directory (internal/provisioner/guest): the token port hands the
// guest its configuration once, after which its socket is removed; the log port carries the
// guest's and the runner's output, which the driver writes to the VM's log file with the serial
// console, and acknowledges only once that works, so the guest never starts a runner whose logs
// are not kept. No vsock is needed (/dev/vhost-vsock is often missing, e.g. nested).
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestlog"
)

// Files in a VM's directory.
const (
	overlayName = "rootfs.qcow2"
	logName     = "vm.log"   // console and guest log stream, served by StreamLogs
	qemuLogName = "qemu.log" // QEMU's own standard output and error
	pidName     = "qemu.pid"
	qmpName     = "qmp.sock"
	consoleName = "console.sock"
	tokenName   = "token.sock"
	guestLog    = "log.sock"
)

// DefaultBootArgs is the kernel command line by default: the serial console is the console
// log; panic=-1 with -no-reboot ends the QEMU process when the guest panics, instead of leaving
// a hung VM.
const DefaultBootArgs = "console=ttyS0 panic=-1 loglevel=4"

// Forward makes a guest address reach a host service under user networking: each guest
// connection to Guest ("10.0.2.100:3000", inside 10.0.2.0/24) runs Command, whose standard
// input and output are that connection (see Relay).
type Forward struct {
	Guest   string
	Command []string
}

// Config configures the driver.
type Config struct {
	// RunDir holds one 0700 directory per VM.
	RunDir string
	// QEMU is qemu-system-x86_64, QEMUImg qemu-img (looked up in PATH when empty).
	QEMU, QEMUImg string
	// Accel is QEMU's -accel: "kvm" on a VM host, "tcg" where there is no usable KVM.
	Accel string
	// Initrd, when set, is given to every VM (-initrd): a guest whose init lives in an
	// initramfs rather than in the root filesystem.
	Initrd string
	// BootArgs is the kernel command line (DefaultBootArgs when empty). Never a secret: guest
	// processes read it in /proc/cmdline, host users in the process list.
	BootArgs string
	// TapPrefix gives each VM the tap device <TapPrefix><slot> (made by the host's network
	// setup, docs/provisioner.md). Empty: QEMU user networking with restrict=on, where the guest
	// reaches nothing but Forwards.
	TapPrefix string
	// TapNetwork, with TapPrefix, gives each guest its address and gateway on the kernel
	// command line (frp.addr, frp.gw) from its slot.
	TapNetwork *driver.GuestNetwork
	Forwards   []Forward
	// OpenSink opens where a VM's logs go; by default the file at path, which StreamLogs serves.
	// The guest's runner starts only after a line was written to it.
	OpenSink func(id, path string) (io.WriteCloser, error)
	// LogLimit bounds a VM's log in bytes (0: no limit); what the guest writes past it is
	// dropped and the log says so.
	LogLimit int64
	// StartWait bounds the wait for a new QEMU process's QMP socket (default 30s).
	StartWait time.Duration
	Logger    logr.Logger
}

// Driver is the QEMU driver.
type Driver struct {
	cfg Config

	mu  sync.Mutex
	vms map[string]*vm
}

// vm is what the driver holds in memory for a VM it made or adopted.
type vm struct {
	exited  chan struct{} // closed when the QEMU process it launched ended; nil when adopted
	sink    *guestlog.Sink
	conns   []net.Conn
	payload []byte
}

var _ driver.Driver = (*Driver)(nil)

// New returns a QEMU driver.
func New(cfg Config) (*Driver, error) {
	if cfg.RunDir == "" {
		return nil, errors.New("qemu: a run directory is needed")
	}
	for _, b := range []struct {
		p    *string
		name string
	}{{&cfg.QEMU, "qemu-system-x86_64"}, {&cfg.QEMUImg, "qemu-img"}} {
		if *b.p == "" {
			p, err := exec.LookPath(b.name)
			if err != nil {
				return nil, fmt.Errorf("qemu: %s not found (hack/install-vm-tools.sh installs it): %w", b.name, err)
			}
			*b.p = p
		}
	}
	if cfg.Accel == "" {
		cfg.Accel = "kvm"
	}
	if cfg.BootArgs == "" {
		cfg.BootArgs = DefaultBootArgs
	}
	if cfg.StartWait == 0 {
		cfg.StartWait = 30 * time.Second
	}
	if cfg.OpenSink == nil {
		cfg.OpenSink = func(_, path string) (io.WriteCloser, error) {
			return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // under the VM's directory
		}
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: create run directory: %w", err)
	}
	return &Driver{cfg: cfg, vms: map[string]*vm{}}, nil
}

// Name implements driver.Driver.
func (d *Driver) Name() string { return "qemu" }

// Dir is the VM's directory on the host.
func (d *Driver) Dir(id string) string { return filepath.Join(d.cfg.RunDir, id) }

func (d *Driver) path(id, name string) string { return filepath.Join(d.Dir(id), name) }

// Create implements driver.Driver: overlay, QEMU started paused (-S), the host ends of the
// console, token and log ports connected before the guest runs a single instruction.
func (d *Driver) Create(ctx context.Context, spec driver.Spec) error {
	if err := driver.ValidID(spec.ID); err != nil {
		return err
	}
	if _, err := d.bootArgs(spec.Slot); err != nil {
		return err
	}
	dir := d.Dir(spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("create VM directory: %w", err)
	}
	if err := d.overlay(ctx, spec.RootfsPath, d.path(spec.ID, overlayName)); err != nil {
		return err
	}
	for _, name := range []string{logName, qemuLogName} {
		f, err := os.OpenFile(d.path(spec.ID, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // under the VM's directory
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		f.Close() //nolint:errcheck,gosec // created empty
	}
	payload, err := json.Marshal(spec.Guest)
	if err != nil {
		return fmt.Errorf("encode guest config: %w", err)
	}
	v := &vm{payload: append(payload, '\n')}
	d.mu.Lock()
	d.vms[spec.ID] = v
	d.mu.Unlock()

	if err := d.launch(spec, v); err != nil {
		return err
	}
	if err := d.waitQMP(ctx, spec.ID, v); err != nil {
		return err
	}
	// QEMU made its sockets under the process umask. The 0700 directory already keeps everyone
	// else out; 0600 keeps them private even if the directory's mode were widened.
	for _, name := range []string{qmpName, consoleName, tokenName, guestLog} {
		if err := os.Chmod(d.path(spec.ID, name), 0o600); err != nil {
			return fmt.Errorf("restrict %s: %w", name, err)
		}
	}
	return d.attach(spec.ID, v, spec.OnGuestConfigRead, spec.OnGuestEvent)
}

// overlay makes the VM's disk: a qcow2 file whose backing file is the base, which QEMU opens
// read-only, so the guest's writes stay in the overlay and go with it.
func (d *Driver) overlay(ctx context.Context, base, dst string) error {
	base, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("base image path: %w", err)
	}
	format, err := imageFormat(base)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, d.cfg.QEMUImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", format, dst) //nolint:gosec // paths the driver made
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(dst, 0o600); err != nil {
		return fmt.Errorf("restrict overlay: %w", err)
	}
	return nil
}

func imageFormat(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // the provisioner's image directory
	if err != nil {
		return "", fmt.Errorf("open base image: %w", err)
	}
	defer f.Close() //nolint:errcheck // read-only
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("read base image: %w", err)
	}
	if string(magic) == "QFI\xfb" {
		return "qcow2", nil
	}
	return "raw", nil
}

// Argv is the QEMU command line for a VM; exported for documentation and tests.
func (d *Driver) Argv(spec driver.Spec) []string {
	p := func(name string) string { return d.path(spec.ID, name) }
	args, _ := d.bootArgs(spec.Slot) // checked by Create
	argv := []string{d.cfg.QEMU,
		"-name", spec.ID, // in the process's command line: Destroy checks it before killing
		"-M", "pc", "-accel", d.cfg.Accel, "-cpu", "max",
		"-m", strconv.FormatUint(uint64(spec.MemoryMiB), 10), "-smp", strconv.FormatUint(uint64(spec.VCPUs), 10),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
		"-kernel", spec.KernelPath, "-append", args,
		"-qmp", "unix:" + p(qmpName) + ",server=on,wait=off",
		"-chardev", "socket,id=console,path=" + p(consoleName) + ",server=on,wait=off",
		"-serial", "chardev:console",
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=token,path=" + p(tokenName) + ",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=token,name=" + guest.TokenPort,
		"-chardev", "socket,id=log,path=" + p(guestLog) + ",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=log,name=" + guest.LogPort,
		"-drive", "file=" + p(overlayName) + ",if=none,id=root,format=qcow2,discard=unmap",
		"-device", "virtio-blk-pci,drive=root",
	}
	argv = append(argv, d.sandbox()...)
	if d.cfg.Initrd != "" {
		argv = append(argv, "-initrd", d.cfg.Initrd)
	}
	var netdev string
	if d.cfg.TapPrefix != "" {
		netdev = fmt.Sprintf("tap,id=net0,ifname=%s%d,script=no,downscript=no", d.cfg.TapPrefix, spec.Slot)
	} else {
		// restrict=on: the guest reaches neither the host nor anything beyond it; only the
		// explicit forwards below.
		netdev = "user,id=net0,restrict=on,net=10.0.2.0/24"
		for _, f := range d.cfg.Forwards {
			quoted := make([]string, len(f.Command))
			for i, a := range f.Command {
				quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
			}
			// QEMU's option syntax doubles commas inside a value.
			netdev += ",guestfwd=tcp:" + f.Guest + "-cmd:" + strings.ReplaceAll(strings.Join(quoted, " "), ",", ",,")
		}
	}
	return append(argv, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,mac="+driver.GuestMAC(spec.Slot))
}

// sandbox is QEMU's seccomp filter, as libvirt sets it: QEMU parses what a hostile guest puts
// in its devices, so it may not gain privileges, change its scheduling, start processes or use
// obsolete system calls. User networking's forwards are the exception (tests): guestfwd starts
// the relay, which did not run under the filter here, so those VMs go without it.
func (d *Driver) sandbox() []string {
	if len(d.cfg.Forwards) > 0 {
		return nil
	}
	return []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}
}

// bootArgs is the kernel command line of the VM in slot: the configured one, and with taps the
// guest's own address and gateway.
func (d *Driver) bootArgs(slot int) (string, error) {
	if d.cfg.TapPrefix == "" || d.cfg.TapNetwork == nil {
		return d.cfg.BootArgs, nil
	}
	net, err := d.cfg.TapNetwork.BootArgs(slot)
	if err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	return d.cfg.BootArgs + " " + net, nil
}

// launch starts QEMU in its own process group, so that the provisioner's signals do not reach
// it and a restarted provisioner finds it running.
func (d *Driver) launch(spec driver.Spec, v *vm) error {
	out, err := os.OpenFile(d.path(spec.ID, qemuLogName), os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // under the VM's directory
	if err != nil {
		return fmt.Errorf("open qemu log: %w", err)
	}
	defer out.Close() //nolint:errcheck // the child has its own descriptor
	argv := d.Argv(spec)
	// Not CommandContext: the process outlives the request that made it.
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // built by the driver from its configuration
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	if err := os.WriteFile(d.path(spec.ID, pidName), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		cmd.Process.Kill() //nolint:errcheck,gosec // unrecorded, it could not be found again
		return fmt.Errorf("record pid: %w", err)
	}
	v.exited = make(chan struct{})
	go func() {
		cmd.Wait() //nolint:errcheck,gosec // its end is seen through State; the log has why
		close(v.exited)
	}()
	return nil
}

func (d *Driver) waitQMP(ctx context.Context, id string, v *vm) error {
	deadline := time.Now().Add(d.cfg.StartWait)
	for {
		_, err := qmp(ctx, d.path(id, qmpName), "query-status", nil)
		if err == nil {
			return nil
		}
		select {
		case <-v.exited:
			out, _ := os.ReadFile(d.path(id, qemuLogName)) //nolint:gosec // under the VM's directory
			return fmt.Errorf("qemu exited at start: %s", strings.TrimSpace(string(out)))
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu's QMP socket did not answer within %s: %w", d.cfg.StartWait, err)
		}
	}
}

// attach connects the host ends of the VM's console and ports and starts relaying them. A VM
// adopted after a restart is attached again without its token port (its guest has its token).
func (d *Driver) attach(id string, v *vm, onRead func(), onEvent func(driver.GuestEvent)) error {
	log := d.cfg.Logger.WithValues("vm", id)
	var s *guestlog.Sink
	if w, err := d.cfg.OpenSink(id, d.path(id, logName)); err != nil {
		// The VM runs without a sink: its guest gets no acknowledgement and starts no runner.
		log.Error(err, "opening the VM's log sink")
		s = guestlog.Refusing(err, log)
	} else {
		s = guestlog.NewSink(w, log, d.cfg.LogLimit)
	}
	dial := func(name string) (net.Conn, error) {
		c, err := net.Dial("unix", d.path(id, name))
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", name, err)
		}
		return c, nil
	}
	console, err := dial(consoleName)
	if err != nil {
		return err
	}
	logc, err := dial(guestLog)
	if err != nil {
		console.Close() //nolint:errcheck,gosec // the dial error is the one to report
		return err
	}
	conns := []net.Conn{console, logc}
	if v.payload != nil {
		tok, err := dial(tokenName)
		if err != nil {
			console.Close() //nolint:errcheck,gosec // the dial error is the one to report
			logc.Close()    //nolint:errcheck,gosec // the dial error is the one to report
			return err
		}
		conns = append(conns, tok)
		go d.serveToken(id, v, tok, onRead)
	}
	d.mu.Lock()
	v.sink, v.conns = s, conns
	d.mu.Unlock()
	go guestlog.RelayConsole(console, s)
	stream := guestlog.NewStream(id, s, onEvent)
	if v.payload == nil {
		go stream.Continue(logc) // adopted: the guest's stream goes on where it was
	} else {
		go stream.Serve(logc)
	}
	return nil
}

// serveToken writes the configuration once the guest asked for it, then closes the port for
// good: the connection is closed and the socket's path removed, so nobody can connect again;
// the payload is cleared.
func (d *Driver) serveToken(id string, v *vm, conn net.Conn, onRead func()) {
	defer conn.Close() //nolint:errcheck // one exchange only
	d.mu.Lock()
	payload := v.payload
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		clear(payload)
		v.payload = nil
		d.mu.Unlock()
		_ = os.Remove(d.path(id, tokenName))
	}()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != guest.TokenRequest {
		if err == nil {
			err = fmt.Errorf("unexpected request %q", strings.TrimSpace(line))
		}
		if !errors.Is(err, net.ErrClosed) {
			d.cfg.Logger.Error(err, "token port", "vm", id)
		}
		return
	}
	if _, err := conn.Write(payload); err != nil {
		d.cfg.Logger.Error(err, "writing the guest's configuration", "vm", id)
		return
	}
	if onRead != nil {
		onRead()
	}
}

// Start implements driver.Driver: the paused guest runs.
func (d *Driver) Start(ctx context.Context, id string) error {
	if _, err := qmp(ctx, d.path(id, qmpName), "cont", nil); err != nil {
		return fmt.Errorf("start VM %s: %w", id, err)
	}
	return nil
}

// Stop implements driver.Driver: Ctrl+Alt+Del, which the guest kernel turns into a reboot and
// -no-reboot into the end of the QEMU process (as Firecracker's SendCtrlAltDel with reboot=k).
func (d *Driver) Stop(ctx context.Context, id string) error {
	keys := []map[string]string{{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}
	if _, err := qmp(ctx, d.path(id, qmpName), "send-key", map[string]any{"keys": keys}); err != nil {
		return fmt.Errorf("stop VM %s: %w", id, err)
	}
	return nil
}

// Destroy implements driver.Driver: the process group is killed (the guest's shutdown is not
// waited for: the VM is throwaway), the connections closed, the token payload cleared, and the
// directory with the overlay, sockets and logs removed.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := driver.ValidID(id); err != nil {
		return err
	}
	d.mu.Lock()
	v := d.vms[id]
	delete(d.vms, id)
	d.mu.Unlock()
	if v != nil {
		for _, c := range v.conns {
			c.Close() //nolint:errcheck,gosec // ending them is the point
		}
		clear(v.payload)
		if v.sink != nil {
			v.sink.Close() //nolint:errcheck,gosec // the file goes with the directory
		}
	}
	dir := d.Dir(id)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	pid := d.pid(id)
	if pid > 0 {
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill qemu process group %d: %w", pid, err)
		}
		if err := waitGone(ctx, pid, v); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove VM directory: %w", err)
	}
	return nil
}

// waitGone waits for a killed QEMU to be gone, so nothing of the VM outlives Destroy.
func waitGone(ctx context.Context, pid int, v *vm) error {
	if v != nil && v.exited != nil {
		select {
		case <-v.exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu %d to end: %w", pid, ctx.Err())
		case <-time.After(30 * time.Second):
			return fmt.Errorf("qemu %d did not end after SIGKILL", pid)
		}
	}
	// Adopted: not our child, so it is reaped elsewhere; wait for the pid to go.
	for range 600 {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu %d to end: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("qemu %d did not end after SIGKILL", pid)
}

// pid is the VM's QEMU process id if that process still runs it: the pid is checked against
// the process's command line (which names the VM), so a recycled pid is never taken for it.
func (d *Driver) pid(id string) int {
	data, err := os.ReadFile(d.path(id, pidName)) //nolint:gosec // under the VM's directory
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "\x00"+id+"\x00") {
		return 0
	}
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
		return 0 // ended, not yet reaped
	}
	return pid
}

// State implements driver.Driver.
func (d *Driver) State(ctx context.Context, id string) (driver.State, error) {
	if err := driver.ValidID(id); err != nil {
		return "", err
	}
	if _, err := os.Stat(d.Dir(id)); errors.Is(err, os.ErrNotExist) {
		return driver.StateGone, nil
	}
	if d.pid(id) == 0 {
		return driver.StateStopped, nil
	}
	raw, err := qmp(ctx, d.path(id, qmpName), "query-status", nil)
	if err != nil {
		return driver.StateRunning, nil //nolint:nilerr // the process lives; a busy monitor is no reason to think otherwise
	}
	var st struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(raw, &st)
	if st.Status == "prelaunch" {
		return driver.StateCreated, nil
	}
	return driver.StateRunning, nil
}

// Reattach implements driver.Driver: the console and the log port of a VM an earlier run made
// are connected again (QEMU's socket servers take a new client once the old one is gone; the
// guest's writes waited meanwhile). Its token port is gone: the guest has its token.
func (d *Driver) Reattach(_ context.Context, id string, onEvent func(driver.GuestEvent)) error {
	if err := driver.ValidID(id); err != nil {
		return err
	}
	if d.pid(id) == 0 {
		return fmt.Errorf("reattach VM %s: %w", id, driver.ErrNotFound)
	}
	d.mu.Lock()
	if _, known := d.vms[id]; known {
		d.mu.Unlock()
		return nil
	}
	v := &vm{}
	d.vms[id] = v
	d.mu.Unlock()
	if err := d.attach(id, v, nil, onEvent); err != nil {
		d.mu.Lock()
		delete(d.vms, id)
		d.mu.Unlock()
		return fmt.Errorf("reattach VM %s: %w", id, err)
	}
	return nil
}

// ConsoleLog implements driver.Driver: the file holding the console and the guest's log stream.
func (d *Driver) ConsoleLog(id string) (string, error) {
	if err := driver.ValidID(id); err != nil {
		return "", err
	}
	path := d.path(id, logName)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s", driver.ErrNotFound, id)
	}
	return path, nil
}
