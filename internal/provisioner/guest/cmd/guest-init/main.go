//go:build linux

// Command guest-init is PID 1 of a provisioner VM (issue #14). It mounts the kernel's
// filesystems, loads the modules it is told to, brings up eth0, reads its configuration (runner
// token included) once from the configuration channel, opens the log stream and waits for the
// provisioner's acknowledgement that it is kept, and only then starts `forgejo-runner one-job`,
// streaming the runner's output to the log stream. It powers the VM off when the runner ends, or
// when no acknowledgement came: a runner whose logs are not kept never takes a job.
//
// The channels are two virtio-serial ports (QEMU, the default) or two vsock ports (Firecracker,
// frp.transport=vsock): transport.go. What runs over them is the same (session.go).
//
// It is static (CGO_ENABLED=0) and uses only the kernel's interfaces: no shell, no udev, no
// DHCP client.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

const tokenFile = "/run/forgejo-runner/token"

func main() {
	err := run()
	if err != nil {
		consolef("%v", err)
	}
	powerOff()
}

// consolef writes to the serial console (stdout of PID 1), which the provisioner records.
func consolef(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "guest-init: "+format+"\n", args...) //nolint:errcheck // nowhere else to report
}

func powerOff() {
	unix.Sync()
	if os.Getpid() != 1 {
		os.Exit(0) // run as a program (tests of the binary itself): nothing to power off
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		consolef("power off: %v", err)
	}
	select {} // PID 1 must not exit: the kernel would panic
}

func run() error {
	start := time.Now()
	if err := mounts(); err != nil {
		return err
	}
	params := cmdline()
	for _, m := range splitList(params[guest.ParamModules]) {
		if err := loadModule(m); err != nil {
			return err
		}
	}
	tr, err := transportFor(params[guest.ParamTransport])
	if err != nil {
		return err
	}
	addr := params[guest.ParamAddr]
	if addr == "" {
		addr = guest.DefaultAddr
	}
	gw := params[guest.ParamGateway]
	if addr != guest.AddrNone {
		if err := netUp(addr); err != nil {
			return err
		}
		if gw != "" {
			if err := defaultRoute(gw); err != nil {
				return err
			}
		}
	}
	consolef("up in %s: eth0 %s gateway %q", time.Since(start).Round(time.Millisecond), addr, gw)

	o := options{boot: start, wait: 30 * time.Second, ackTimeout: 2 * time.Minute, redial: guest.VsockRedial,
		probes: splitList(params[guest.ParamProbe]), say: consolef}
	if v := params[guest.ParamAckTimeout]; v != "" {
		if o.ackTimeout, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("%s: %w", guest.ParamAckTimeout, err)
		}
	}
	runner := params[guest.ParamRunner]
	if runner == "" {
		runner = "/usr/bin/forgejo-runner"
	}
	return serve(tr, o, func(cfg driver.GuestConfig, logw *logStream) (int, error) {
		return runRunner(runner, cfg, logw)
	})
}

func mounts() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

func cmdline() map[string]string {
	data, _ := os.ReadFile("/proc/cmdline")
	out := map[string]string{}
	for _, f := range strings.Fields(string(data)) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func loadModule(path string) error {
	f, err := os.Open(path) //nolint:gosec // named on the kernel command line by the host
	if err != nil {
		return fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close() //nolint:errcheck // read-only
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) { //nolint:gosec // an fd fits an int
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// netUp configures lo and eth0 with ioctls: the forwarded Forgejo address is on eth0's subnet,
// so no route beyond the connected one is needed.
func netUp(cidr string) error {
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil || !prefix.Addr().Is4() {
		return fmt.Errorf("%s %q: want an IPv4 CIDR", guest.ParamAddr, cidr)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd) //nolint:errcheck // a control socket
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The virtio_net module probes its device asynchronously.
		if _, err := os.Stat("/sys/class/net/eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no eth0")
		}
		time.Sleep(50 * time.Millisecond)
	}
	set := func(name string, req uint, f func(*unix.Ifreq) error) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := f(ifr); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			return fmt.Errorf("ioctl %#x on %s: %w", req, name, err)
		}
		return nil
	}
	mask := net.CIDRMask(prefix.Bits(), 32)
	steps := []error{
		set("eth0", unix.SIOCSIFADDR, func(r *unix.Ifreq) error { return r.SetInet4Addr(prefix.Addr().AsSlice()) }),
		set("eth0", unix.SIOCSIFNETMASK, func(r *unix.Ifreq) error { return r.SetInet4Addr(mask) }),
	}
	for _, name := range []string{"lo", "eth0"} {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fmt.Errorf("ifreq %s: %w", name, err)
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("flags of %s: %w", name, err)
		}
		flags := ifr.Uint16() | unix.IFF_UP
		steps = append(steps, set(name, unix.SIOCSIFFLAGS, func(r *unix.Ifreq) error { r.SetUint16(flags); return nil }))
	}
	return errors.Join(steps...)
}

// defaultRoute adds the default route through gw over rtnetlink (the ioctl way needs a struct
// x/sys/unix does not have).
func defaultRoute(gw string) error {
	a, err := netip.ParseAddr(gw)
	if err != nil || !a.Is4() {
		return fmt.Errorf("%s %q: want an IPv4 address", guest.ParamGateway, gw)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd) //nolint:errcheck // a control socket
	msg := routeMessage(a.As4())
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil || len(msgs) == 0 || msgs[0].Header.Type != unix.NLMSG_ERROR || len(msgs[0].Data) < 4 {
		return fmt.Errorf("add default route via %s: unexpected answer", gw)
	}
	if errno := int32(binary.NativeEndian.Uint32(msgs[0].Data[:4])); errno != 0 { //nolint:gosec // the kernel's negated errno
		return fmt.Errorf("add default route via %s: %w", gw, syscall.Errno(-errno))
	}
	return nil
}

// routeMessage is an RTM_NEWROUTE request for 0.0.0.0/0 via gw in the main table, acknowledged.
func routeMessage(gw [4]byte) []byte {
	const hdr, rtm, attr = unix.SizeofNlMsghdr, unix.SizeofRtMsg, unix.SizeofRtAttr + 4
	b := make([]byte, hdr+rtm+attr)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.RTM_NEWROUTE)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(b[8:], 1) // sequence
	r := b[hdr:]
	r[0] = unix.AF_INET           // family
	r[4] = unix.RT_TABLE_MAIN     // table
	r[5] = unix.RTPROT_BOOT       // protocol
	r[6] = unix.RT_SCOPE_UNIVERSE // scope
	r[7] = unix.RTN_UNICAST       // type
	at := b[hdr+rtm:]
	binary.NativeEndian.PutUint16(at[0:], attr)
	binary.NativeEndian.PutUint16(at[2:], unix.RTA_GATEWAY)
	copy(at[4:], gw[:])
	return b
}

// runRunner starts forgejo-runner one-job with the token in a file only root can read, streams
// its output to the log stream, and passes SIGTERM/SIGINT on so it can report its task's end.
// The flags are one-job's in the runner with --handle (ppaslan/runner a811c1ac,
// internal/app/cmd/cmd.go: --url, --uuid, --token-url, repeatable --label, --handle for Forgejo
// 15); internal/app/cmd/args.go reads --token-url once, while parsing them.
func runRunner(bin string, cfg driver.GuestConfig, logw *logStream) (int, error) {
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		return -1, fmt.Errorf("token directory: %w", err)
	}
	// No trailing newline: the runner uses the file verbatim.
	if err := os.WriteFile(tokenFile, []byte(cfg.Token), 0o600); err != nil {
		return -1, fmt.Errorf("write token: %w", err)
	}
	args := []string{"one-job", "--url", cfg.ForgejoURL, "--uuid", cfg.RegistrationUUID, "--token-url", "file:" + tokenFile}
	for _, l := range cfg.Labels {
		args = append(args, "--label", l)
	}
	if cfg.JobHandle != "" {
		args = append(args, "--handle", cfg.JobHandle)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	cmd := exec.Command(bin, args...) //nolint:gosec // the runner named on the kernel command line
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp"}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		eachChunk(pr, runnerChunk, func(text string) { logw.line("runner: " + text) })
	}()
	logw.printf("starting %s one-job for runner %s", bin, cfg.RegistrationUUID)
	if err := cmd.Start(); err != nil {
		pw.Close() //nolint:errcheck,gosec // no writer started
		<-done
		return -1, fmt.Errorf("start runner: %w", err)
	}
	logw.line(guest.LogEvent + " " + guest.EventRunnerStarted)
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			cmd.Process.Signal(unix.SIGTERM) //nolint:errcheck,gosec // it may have ended
		}
	}()
	err := cmd.Wait()
	pw.Close() //nolint:errcheck,gosec // ends the copier
	<-done
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("runner: %w", err)
	}
	return 0, nil
}

// runnerChunk is the longest piece of a runner's line sent as one line: well under the host's
// cut (guestlog.MaxLine), so nothing of a long line is lost, only split.
const runnerChunk = 16 << 10

// eachChunk calls fn with each line of r, a line longer than size in pieces of size, until r
// ends: no line is too long to pass, so the runner never blocks on a stalled copier.
func eachChunk(r io.Reader, size int, fn func(string)) {
	br := bufio.NewReaderSize(r, size)
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			fn(strings.TrimSuffix(string(frag), "\n"))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
