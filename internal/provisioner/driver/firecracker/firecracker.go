// Package firecracker is the provisioner's Firecracker driver: it launches one Firecracker
// process per VM (directly, or under the jailer) and configures it over Firecracker's HTTP API
// on the process's Unix socket: logger, metrics, machine config, boot source, the root drive (a
// per-VM copy-on-write overlay), a network interface, a vsock device, then InstanceStart;
// SendCtrlAltDel to stop.
//
// The runner token reaches the guest over the vsock device: the guest connects to the host's
// port GuestConfigPort and reads its configuration once (internal/provisioner/guestchan). The
// token is never sent to Firecracker's API, never on the kernel command line, never in a file.
package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestchan"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/overlay"
)

// GuestConfigPort is the vsock port the guest connects to (host CID 2) for its configuration.
const GuestConfigPort = 1024

// Files in a VM's directory (the jail's root when jailed). The names are what Firecracker is
// given, relative to the directory, so that the same names work inside the jailer's chroot.
const (
	apiSocketName = "firecracker.socket"
	rootfsName    = "rootfs.ext4"
	kernelName    = "vmlinux"
	consoleName   = "console.log"
	loggerName    = "firecracker.log"
	metricsName   = "metrics.json"
	vsockName     = "v.sock"
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
	// BootArgs is the kernel command line; DefaultBootArgs when empty.
	BootArgs string
	// SocketWait bounds the wait for a new Firecracker process's API socket.
	SocketWait time.Duration
	Logger     logr.Logger
}

// Driver is the Firecracker driver.
type Driver struct {
	cfg Config

	mu       sync.Mutex
	channels map[string]*guestchan.Channel
}

var _ driver.Driver = (*Driver)(nil)

// New returns a Firecracker driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Jailer == nil && cfg.RunDir == "" {
		return nil, errors.New("firecracker: a run directory or a jailer is needed")
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
	if cfg.RunDir != "" {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			return nil, fmt.Errorf("firecracker: create run directory: %w", err)
		}
	}
	return &Driver{cfg: cfg, channels: map[string]*guestchan.Channel{}}, nil
}

// Name implements driver.Driver.
func (d *Driver) Name() string { return "firecracker" }

// Dir is the VM's directory on the host: the jail's root when jailed.
func (d *Driver) Dir(id string) string {
	if d.cfg.Jailer != nil {
		return d.cfg.Jailer.root(id)
	}
	return filepath.Join(d.cfg.RunDir, id)
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
	if err := validID(spec.ID); err != nil {
		return err
	}
	dir := d.Dir(spec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
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
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // under the VM's directory
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

	launch := Launch{ID: spec.ID, Dir: dir, APISocket: filepath.Join(dir, apiSocketName), Console: filepath.Join(dir, consoleName)}
	if d.cfg.Jailer != nil {
		launch.Argv = d.cfg.Jailer.argv(d.cfg.Binary, spec)
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
		{"/boot-source", map[string]any{"kernel_image_path": kernel, "boot_args": d.cfg.BootArgs}},
		{"/drives/rootfs", map[string]any{"drive_id": "rootfs", "path_on_host": d.apiPath(spec.ID, rootfsName), "is_root_device": true, "is_read_only": false}},
	}
	if d.cfg.TapPrefix != "" {
		steps = append(steps, struct {
			path string
			body any
		}{"/network-interfaces/eth0", map[string]any{"iface_id": "eth0", "host_dev_name": fmt.Sprintf("%s%d", d.cfg.TapPrefix, spec.Slot), "guest_mac": guestMAC(spec.Slot)}})
	}
	for _, st := range steps {
		if err := api.put(ctx, st.path, st.body); err != nil {
			return err
		}
	}

	// The host end of the guest's vsock port: Firecracker connects here when the guest dials
	// CID 2, GuestConfigPort. Listen before the device exists, so no connection finds nobody.
	if err := d.serveGuestConfig(spec); err != nil {
		return err
	}
	return api.put(ctx, "/vsock", map[string]any{"guest_cid": 3 + spec.Slot, "uds_path": d.apiPath(spec.ID, vsockName)})
}

func (d *Driver) serveGuestConfig(spec driver.Spec) error {
	path := filepath.Join(d.Dir(spec.ID), fmt.Sprintf("%s_%d", vsockName, GuestConfigPort))
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen for the guest: %w", err)
	}
	// Only the Firecracker process (its user, when jailed) may connect: anyone else on the host
	// who could would read the token.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close() //nolint:errcheck,gosec // the chmod error is the one to report
		return fmt.Errorf("restrict the guest socket: %w", err)
	}
	if d.cfg.Jailer != nil {
		if err := os.Lchown(path, d.cfg.Jailer.UID, d.cfg.Jailer.GID); err != nil {
			ln.Close() //nolint:errcheck,gosec // the chown error is the one to report
			return fmt.Errorf("hand the guest socket to the jailer's user: %w", err)
		}
	}
	payload, err := json.Marshal(spec.Guest)
	if err != nil {
		ln.Close() //nolint:errcheck,gosec // the encoding error is the one to report
		return fmt.Errorf("encode guest config: %w", err)
	}
	ch := guestchan.Serve(ln, append(payload, '\n'), spec.OnGuestConfigRead)
	d.mu.Lock()
	if old := d.channels[spec.ID]; old != nil {
		old.Close() //nolint:errcheck,gosec // replaced
	}
	d.channels[spec.ID] = ch
	d.mu.Unlock()
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

// Destroy implements driver.Driver: the process is killed (a guest's shutdown is not waited
// for: the VM is throwaway), the guest channel closed, the directory with the overlay, sockets
// and logs removed.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	d.mu.Lock()
	if ch := d.channels[id]; ch != nil {
		ch.Close() //nolint:errcheck,gosec // dropping the payload is the point
		delete(d.channels, id)
	}
	d.mu.Unlock()
	dir := d.Dir(id)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := d.cfg.Launcher.Kill(ctx, id, dir); err != nil {
		return fmt.Errorf("kill firecracker: %w", err)
	}
	target := dir
	if d.cfg.Jailer != nil {
		target = filepath.Dir(dir) // <chroot base>/firecracker/<id>: the jail with its root
	}
	if err := os.RemoveAll(target); err != nil {
		return fmt.Errorf("remove VM directory: %w", err)
	}
	return nil
}

// State implements driver.Driver, asking the process itself.
func (d *Driver) State(ctx context.Context, id string) (driver.State, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	if _, err := os.Stat(d.Dir(id)); errors.Is(err, os.ErrNotExist) {
		return driver.StateGone, nil
	}
	var info struct {
		State string `json:"state"`
	}
	if err := d.client(id).get(ctx, "/", &info); err != nil {
		// No answer on the socket: the process is gone.
		return driver.StateStopped, nil //nolint:nilerr // the error is the answer
	}
	if info.State == "Not started" {
		return driver.StateCreated, nil
	}
	return driver.StateRunning, nil
}

// Reattach implements driver.Driver. The console goes from Firecracker's standard output to
// its file without the provisioner, so only the process is checked.
func (d *Driver) Reattach(ctx context.Context, id string, _ func(driver.GuestEvent)) error {
	st, err := d.State(ctx, id)
	if err != nil {
		return err
	}
	if st != driver.StateRunning {
		return fmt.Errorf("reattach VM %s: %s: %w", id, st, driver.ErrNotFound)
	}
	return nil
}

// ConsoleLog implements driver.Driver.
func (d *Driver) ConsoleLog(id string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	path := filepath.Join(d.Dir(id), consoleName)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s", driver.ErrNotFound, id)
	}
	return path, nil
}

// validID keeps ids usable as path elements: they name directories and jails.
func validID(id string) error {
	if id == "" || len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("firecracker: invalid VM id %q", id)
	}
	return nil
}

// guestMAC is a locally administered unicast address derived from the slot.
func guestMAC(slot int) string {
	return fmt.Sprintf("06:00:ac:10:%02x:%02x", (slot>>8)&0xff, slot&0xff)
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	_, err := overlay.Create(src, dst)
	return err
}
