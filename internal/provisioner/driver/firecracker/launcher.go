package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Launch is one Firecracker process to start.
type Launch struct {
	ID string
	// Dir is the VM's directory, the jail's root when jailed.
	Dir string
	// StateDir is the provisioner's own directory of the VM, out of Firecracker's reach, where a
	// Launcher keeps what it must know of the process.
	StateDir  string
	APISocket string
	// Argv is the command: firecracker's or the jailer's.
	Argv []string
	// Console is the file the process's standard output and error go to: the guest's serial
	// console.
	Console string
}

// Launcher starts and kills Firecracker processes. Kill must work for a process started by an
// earlier run of the provisioner, from the VM's state directory alone.
type Launcher interface {
	Launch(ctx context.Context, l Launch) error
	Kill(ctx context.Context, id, stateDir string) error
}

// pidFile records the process in the VM's state directory, for Kill after a restart.
const pidFile = "firecracker.pid"

// ExecLauncher runs the command as a child process in its own process group, so the
// provisioner's signals do not reach it and a restart of the provisioner leaves it running.
type ExecLauncher struct{}

// Launch implements Launcher.
func (ExecLauncher) Launch(_ context.Context, l Launch) error {
	// O_APPEND: every write of Firecracker's lands at the file's end, wherever that is now.
	console, err := openRegular(l.Console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	defer console.Close() //nolint:errcheck // the child has its own descriptor
	// Not CommandContext: the process outlives the request that made it.
	cmd := exec.Command(l.Argv[0], l.Argv[1:]...) //nolint:gosec // argv is built by the driver from its configuration
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", l.Argv[0], err)
	}
	if err := os.WriteFile(filepath.Join(l.StateDir, pidFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		cmd.Process.Kill() //nolint:errcheck,gosec // unrecorded, it could not be found again
		return fmt.Errorf("record pid: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaps the child; its end is seen through the API socket
	return nil
}

// Kill implements Launcher. The pid is checked against the process's command line (it must name
// the VM's id) so a recycled pid is never killed.
func (ExecLauncher) Kill(_ context.Context, id, stateDir string) error {
	data, err := os.ReadFile(filepath.Join(stateDir, pidFile)) //nolint:gosec // the provisioner's state directory
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("bad pid file %q", data)
	}
	cmdline, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if rerr != nil || !strings.Contains(string(cmdline), id) {
		return nil //nolint:nilerr // no such process, or the pid now names another: nothing of ours to kill
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pid, err)
	}
	return nil
}
