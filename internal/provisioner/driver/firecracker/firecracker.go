// Package firecracker is the provisioner's Firecracker driver: it launches one Firecracker
// process per VM (directly, or under the jailer) and configures it over Firecracker's HTTP API
// on the process's Unix socket: logger, metrics, machine config, boot source, the root drive (a
// per-VM copy-on-write overlay), a network interface, a vsock device, then InstanceStart;
// SendCtrlAltDel to stop.
//
// The guest talks to the provisioner over the vsock device, dialling the host (CID 2): on port
// GuestConfigPort it reads its configuration once (internal/provisioner/guestchan), runner token
// included; on port GuestLogPort it streams its log, which the driver acknowledges only once it
// can keep it (internal/provisioner/guestlog, "logs before work"). Firecracker connects each such
// guest connection to the Unix socket <uds_path>_<port> in the VM's directory, where the driver
// listens. The token is never sent to Firecracker's API, never on the kernel command line, never
// in a file.
//
// The VM's log (vm.log, what ConsoleLog names) holds the serial console, which Firecracker writes
// to its standard output, a file (console.log) the driver reads and copies line by line, and the
// guest's log stream. The provisioner's own files of a VM (vm.log, console.offset, the process
// record) are kept out of the jail, where Firecracker cannot replace them. A provisioner restart
// costs the VM nothing: Firecracker's output never goes through the provisioner, and the guest
// dials its log stream again until a provisioner that Reattached the VM answers.
package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestchan"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/overlay"
)

// Vsock ports the guest connects to (host CID 2): its configuration, once, and its log stream.
const (
	GuestConfigPort = guest.VsockConfigPort
	GuestLogPort    = guest.VsockLogPort
)

// Files in a VM's directory (the jail's root when jailed). The names are what Firecracker is
// given, relative to the directory, so that the same names work inside the jailer's chroot.
const (
	apiSocketName = "firecracker.socket"
	rootfsName    = "rootfs.ext4"
	kernelName    = "vmlinux"
	consoleName   = "console.log" // Firecracker's standard output and error: the serial console
	loggerName    = "firecracker.log"
	metricsName   = "metrics.json"
	vsockName     = "v.sock"
)

// Files in a VM's state directory: the provisioner's, never given to Firecracker. Unjailed it is
// the VM's directory; jailed, the jail's directory above its root, outside the chroot.
const (
	logName           = "vm.log"         // the console's lines and the guest's log stream: ConsoleLog
	consoleOffsetName = "console.offset" // how much of console.log is in vm.log
)

// DefaultBootArgs is the kernel command line by default: serial console for the log stream, reboot=k and panic=1 so a guest that
// halts or panics ends its Firecracker process instead of hanging.
const DefaultBootArgs = "console=ttyS0 reboot=k panic=1 pci=off"

// Config configures the driver.
type Config struct {
	// RunDir holds one directory per VM (when not jailed).
	RunDir string
	// Binary is the firecracker executable.
	Binary string
	// Jailer, when set, runs Firecracker under the jailer (docs/provisioner.md).
	Jailer *Jailer
	// Launcher starts and kills Firecracker processes; ExecLauncher by default.
	Launcher Launcher
	// TapPrefix names each VM's tap device, TapPrefix + slot; empty gives VMs no network
	// interface. The provisioner does not create taps yet (docs/provisioner.md).
	TapPrefix string
	// TapNetwork, with TapPrefix, gives each guest its address and gateway on the kernel
	// command line (frp.addr, frp.gw) from its slot.
	TapNetwork *driver.GuestNetwork
	// BootArgs is the kernel command line; DefaultBootArgs when empty. The driver adds the
	// guest init's transport (vsock) and network settings.
	BootArgs string
	// SocketWait bounds the wait for a new Firecracker process's API socket.
	SocketWait time.Duration
	// OpenSink opens where a VM's log goes (the console's lines and the guest's log stream); by
	// default the file at path (vm.log in the VM's state directory, 0600), which ConsoleLog
	// names. The guest starts its runner only after a line was written to it.
	OpenSink func(id, path string) (io.WriteCloser, error)
	// LogLimit bounds a VM's log in bytes (0: no limit); what the guest writes past it is
	// dropped and the log says so.
	LogLimit int64
	// ConsolePoll is how often the console file is read for new lines (default 200ms).
	ConsolePoll time.Duration
	Logger      logr.Logger
}

// Driver is the Firecracker driver.
type Driver struct {
	cfg Config
	// jailName names the jails' directories under the jailer's chroot base.
	jailName string

	mu  sync.Mutex
	vms map[string]*vm
}

var _ driver.Driver = (*Driver)(nil)

// New returns a Firecracker driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Jailer == nil && cfg.RunDir == "" {
		return nil, errors.New("firecracker: a run directory or a jailer is needed")
	}
	if j := cfg.Jailer; j != nil && j.ParentCgroup != "" && !filepath.IsLocal(j.ParentCgroup) {
		return nil, fmt.Errorf("firecracker: the jailer's parent cgroup %q is not a relative path below the cgroup root", j.ParentCgroup)
	}
	if cfg.Launcher == nil {
		cfg.Launcher = &ExecLauncher{}
	}
	if cfg.BootArgs == "" {
		cfg.BootArgs = DefaultBootArgs
	}
	if cfg.SocketWait == 0 {
		cfg.SocketWait = 10 * time.Second
	}
	if cfg.ConsolePoll == 0 {
		cfg.ConsolePoll = 200 * time.Millisecond
	}
	if cfg.OpenSink == nil {
		cfg.OpenSink = func(_, path string) (io.WriteCloser, error) {
			return openRegular(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		}
	}
	if cfg.RunDir != "" {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			return nil, fmt.Errorf("firecracker: create run directory: %w", err)
		}
	}
	d := &Driver{cfg: cfg, vms: map[string]*vm{}}
	if cfg.Jailer != nil {
		d.jailName = jailName(cfg.Binary)
	}
	return d, nil
}

// Name implements driver.Driver.
func (d *Driver) Name() string { return "firecracker" }

// Dir is the VM's directory on the host: the jail's root when jailed.
func (d *Driver) Dir(id string) string {
	if d.cfg.Jailer != nil {
		return d.cfg.Jailer.root(d.jailName, id)
	}
	return filepath.Join(d.cfg.RunDir, id)
}

// stateDir is the provisioner's own directory of a VM, 0700, where Firecracker cannot write: the
// VM's directory when not jailed, the jail's directory (<chroot base>/<jail name>/<id>, above the
// chroot) when jailed. Removing it removes everything of the VM.
func (d *Driver) stateDir(id string) string {
	if d.cfg.Jailer != nil {
		return filepath.Dir(d.Dir(id))
	}
	return d.Dir(id)
}

// apiPath is how Firecracker must be told of a file in the VM's directory: inside the chroot
// when jailed, where the directory is "/".
func (d *Driver) apiPath(id, name string) string {
	if d.cfg.Jailer != nil {
		return "/" + name
	}
	return filepath.Join(d.Dir(id), name)
}

func (d *Driver) client(id string) *apiClient {
	return newAPIClient(filepath.Join(d.Dir(id), apiSocketName))
}

// Create implements driver.Driver.
func (d *Driver) Create(ctx context.Context, spec driver.Spec) error {
	if err := driver.ValidID(spec.ID); err != nil {
		return err
	}
	bootArgs, err := d.bootArgs(spec.Slot)
	if err != nil {
		return err
	}
	dir := d.Dir(spec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil { // and the state directory above a jail's root
		return fmt.Errorf("create VM directory: %w", err)
	}
	if _, err := overlay.Create(spec.RootfsPath, filepath.Join(dir, rootfsName)); err != nil {
		return fmt.Errorf("rootfs overlay: %w", err)
	}
	kernel := spec.KernelPath
	if d.cfg.Jailer != nil {
		// Inside the chroot only the jail's files exist: link the kernel in (read-only use).
		if err := linkOrCopy(spec.KernelPath, filepath.Join(dir, kernelName)); err != nil {
			return fmt.Errorf("kernel into jail: %w", err)
		}
		kernel = d.apiPath(spec.ID, kernelName)
	}
	for _, name := range []string{consoleName, loggerName, metricsName} {
		f, err := openRegular(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		f.Close() //nolint:errcheck,gosec // created empty
	}
	if d.cfg.Jailer != nil {
		if err := d.cfg.Jailer.chownJail(dir); err != nil {
			return err
		}
	}

	launch := Launch{ID: spec.ID, Dir: dir, StateDir: d.stateDir(spec.ID), APISocket: filepath.Join(dir, apiSocketName),
		Console: filepath.Join(dir, consoleName)}
	if d.cfg.Jailer != nil {
		launch.Argv = d.cfg.Jailer.argv(d.cfg.Binary, spec)
		launch.PIDFile = filepath.Join(dir, d.jailName+".pid")
	} else {
		launch.Argv = []string{d.cfg.Binary, "--api-sock", launch.APISocket, "--id", spec.ID}
	}
	if err := d.cfg.Launcher.Launch(ctx, launch); err != nil {
		return fmt.Errorf("launch firecracker: %w", err)
	}
	api := d.client(spec.ID)
	if err := api.waitReady(ctx, d.cfg.SocketWait); err != nil {
		return err
	}

	steps := []struct {
		path string
		body any
	}{
		{"/logger", map[string]any{"log_path": d.apiPath(spec.ID, loggerName), "level": "Info", "show_level": true, "show_log_origin": false}},
		{"/metrics", map[string]any{"metrics_path": d.apiPath(spec.ID, metricsName)}},
		{"/machine-config", map[string]any{"vcpu_count": spec.VCPUs, "mem_size_mib": spec.MemoryMiB, "smt": false}},
		{"/boot-source", map[string]any{"kernel_image_path": kernel, "boot_args": bootArgs}},
		{"/drives/rootfs", map[string]any{"drive_id": "rootfs", "path_on_host": d.apiPath(spec.ID, rootfsName), "is_root_device": true, "is_read_only": false}},
	}
	if d.cfg.TapPrefix != "" {
		steps = append(steps, struct {
			path string
			body any
		}{"/network-interfaces/eth0", map[string]any{"iface_id": "eth0", "host_dev_name": fmt.Sprintf("%s%d", d.cfg.TapPrefix, spec.Slot), "guest_mac": driver.GuestMAC(spec.Slot)}})
	}
	for _, st := range steps {
		if err := api.put(ctx, st.path, st.body); err != nil {
			return err
		}
	}

	// The host ends of the guest's vsock ports: Firecracker connects to them when the guest
	// dials CID 2. Listen before the device exists, so no connection finds nobody.
	v, err := d.attach(spec.ID, spec.OnGuestEvent, false)
	if err != nil {
		return err
	}
	if err := d.serveGuestConfig(spec, v); err != nil {
		return err
	}
	return api.put(ctx, "/vsock", map[string]any{"guest_cid": 3 + spec.Slot, "uds_path": d.apiPath(spec.ID, vsockName)})
}

// listenGuest listens on the Unix socket Firecracker connects to when the guest dials host port
// port. A socket file left by an earlier run of the provisioner (whose listener died with it)
// is replaced.
func (d *Driver) listenGuest(id string, port int) (*net.UnixListener, error) {
	path := filepath.Join(d.Dir(id), fmt.Sprintf("%s_%d", vsockName, port))
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale guest socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen for the guest on port %d: %w", port, err)
	}
	// Only the Firecracker process (its user, when jailed) may connect: anyone else on the host
	// who could would read the token, or write the VM's log. (Not os.Chmod: in a jail, what is at
	// the path by now may be a symlink to a host file.)
	if err := chmodSocket(path, 0o600); err != nil {
		ln.Close() //nolint:errcheck,gosec // the chmod error is the one to report
		return nil, fmt.Errorf("restrict the guest socket: %w", err)
	}
	if d.cfg.Jailer != nil {
		if err := os.Lchown(path, d.cfg.Jailer.UID, d.cfg.Jailer.GID); err != nil {
			ln.Close() //nolint:errcheck,gosec // the chown error is the one to report
			return nil, fmt.Errorf("hand the guest socket to the jailer's user: %w", err)
		}
	}
	return ln, nil
}

func (d *Driver) serveGuestConfig(spec driver.Spec, v *vm) error {
	ln, err := d.listenGuest(spec.ID, GuestConfigPort)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(spec.Guest)
	if err != nil {
		ln.Close() //nolint:errcheck,gosec // the encoding error is the one to report
		return fmt.Errorf("encode guest config: %w", err)
	}
	// Served once; closing the listener then removes its socket: nobody can connect again.
	v.setConfig(guestchan.Serve(ln, append(payload, '\n'), spec.OnGuestConfigRead))
	return nil
}

// Start implements driver.Driver.
func (d *Driver) Start(ctx context.Context, id string) error {
	return d.client(id).put(ctx, "/actions", map[string]any{"action_type": "InstanceStart"})
}

// Stop implements driver.Driver: Ctrl+Alt+Del, which a guest with reboot=k turns into an exit of
// the Firecracker process.
func (d *Driver) Stop(ctx context.Context, id string) error {
	return d.client(id).put(ctx, "/actions", map[string]any{"action_type": "SendCtrlAltDel"})
}

// Destroy implements driver.Driver: the guest's channels are closed (a configuration not yet
// read is dropped; the listeners, log relays and console tail end), the process is killed (a
// guest's shutdown is not waited for: the VM is throwaway) and waited for, the jailer's cgroup
// of the VM removed, then the state directory with the VM's directory (the jail) in it: the
// overlay, sockets and logs.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := driver.ValidID(id); err != nil {
		return err
	}
	d.mu.Lock()
	v := d.vms[id]
	delete(d.vms, id)
	d.mu.Unlock()
	if v != nil {
		v.close()
	}
	state := d.stateDir(id)
	if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := d.cfg.Launcher.Kill(ctx, id, state); err != nil {
		return fmt.Errorf("kill firecracker: %w", err)
	}
	if d.cfg.Jailer != nil {
		if err := d.cfg.Jailer.removeCgroup(ctx, d.jailName, id); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(state); err != nil {
		return fmt.Errorf("remove VM directory: %w", err)
	}
	return nil
}

// stateQueryWait bounds State's question to Firecracker's API: a VMM too busy to answer in time
// runs all the same.
const stateQueryWait = 2 * time.Second

// State implements driver.Driver. Whether the VM runs is the process's to tell (the Launcher
// knows it by pid and start time): a busy or stuck API is no sign of its end, and a VM taken for
// stopped would have its capacity given away while it runs, or be destroyed by a restarted
// provisioner instead of adopted. The API only tells a VM created from a started one; when it
// does not answer, the VM runs.
func (d *Driver) State(ctx context.Context, id string) (driver.State, error) {
	if err := driver.ValidID(id); err != nil {
		return "", err
	}
	state := d.stateDir(id)
	if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
		return driver.StateGone, nil
	}
	alive, err := d.cfg.Launcher.Alive(id, state)
	if err != nil {
		return "", fmt.Errorf("firecracker process of VM %s: %w", id, err)
	}
	if !alive {
		return driver.StateStopped, nil
	}
	ctx, cancel := context.WithTimeout(ctx, stateQueryWait)
	defer cancel()
	var info struct {
		State string `json:"state"`
	}
	if err := d.client(id).get(ctx, "/", &info); err != nil {
		return driver.StateRunning, nil // the process lives: a busy VMM is no reason to think otherwise
	}
	if info.State == "Not started" {
		return driver.StateCreated, nil
	}
	return driver.StateRunning, nil
}

// bootArgs is the kernel command line of the VM in slot: the configured one, the vsock
// transport (a Firecracker guest has no virtio-serial ports), and the guest's network: its
// address and gateway on a tap, or none without one.
func (d *Driver) bootArgs(slot int) (string, error) {
	args := d.cfg.BootArgs + " " + guest.ParamTransport + "=" + guest.TransportVsock
	switch {
	case d.cfg.TapPrefix == "":
		return args + " " + guest.ParamAddr + "=" + guest.AddrNone, nil
	case d.cfg.TapNetwork != nil:
		net, err := d.cfg.TapNetwork.BootArgs(slot)
		if err != nil {
			return "", fmt.Errorf("firecracker: %w", err)
		}
		return args + " " + net, nil
	}
	return args, nil
}

// Reattach implements driver.Driver, for a running VM an earlier run of the provisioner made:
// the console is read on from where the last run got to (console.offset), and the log socket
// is listened on again. The guest's log connection broke when the last run ended (Firecracker
// shuts down a guest connection whose host end closed); the guest dials again and resumes its
// stream (guest.LogResume), its runner's output held back meanwhile. Its configuration socket is
// not served again: the guest has its token.
func (d *Driver) Reattach(ctx context.Context, id string, onEvent func(driver.GuestEvent)) error {
	st, err := d.State(ctx, id)
	if err != nil {
		return err
	}
	if st != driver.StateRunning {
		return fmt.Errorf("reattach VM %s: %s: %w", id, st, driver.ErrNotFound)
	}
	d.mu.Lock()
	_, known := d.vms[id]
	d.mu.Unlock()
	if known {
		return nil
	}
	if _, err := d.attach(id, onEvent, true); err != nil {
		return fmt.Errorf("reattach VM %s: %w", id, err)
	}
	return nil
}

// Close lets go of every VM without touching it, as the provisioner's exit does: listeners, log
// relays and console tails end, the socket files stay. The VMs run on; a Driver made again over
// the same directories takes them up with Reattach. A guest configuration not yet read is dropped
// (such a VM cannot be adopted: its token is gone).
func (d *Driver) Close() error {
	d.mu.Lock()
	vms := d.vms
	d.vms = map[string]*vm{}
	d.mu.Unlock()
	for _, v := range vms {
		v.close()
	}
	return nil
}

// ConsoleLog implements driver.Driver: the VM's log, holding the serial console (copied from
// console.log, with guestlog.ConsolePrefix) and the guest's log stream. What the console holds
// when it is called is in the log before it returns. The log is in the VM's state directory,
// outside the jail: what a jailed Firecracker does to its files never makes it name another.
func (d *Driver) ConsoleLog(id string) (string, error) {
	if err := driver.ValidID(id); err != nil {
		return "", err
	}
	d.mu.Lock()
	v := d.vms[id]
	d.mu.Unlock()
	if v != nil {
		v.tail.catchUp() //nolint:errcheck,gosec // the log has what could be copied
	}
	path := filepath.Join(d.stateDir(id), logName)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s", driver.ErrNotFound, id)
	}
	return path, nil
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	_, err := overlay.Create(src, dst)
	return err
}
