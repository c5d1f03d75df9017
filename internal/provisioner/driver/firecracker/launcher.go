package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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
	// PIDFile, when set, is where the command reports the pid of the Firecracker process: the
	// jailer writes it (<jail root>/<exec name>.pid) before it becomes Firecracker or, with
	// --new-pid-ns, once it has started Firecracker in the new namespace, and then ends. Without
	// it, the command started is the Firecracker process.
	PIDFile string
}

// Launcher starts Firecracker processes, tells whether one runs and kills it. Alive and Kill must
// work for a process started by an earlier run of the provisioner, from the VM's state directory
// alone.
type Launcher interface {
	Launch(ctx context.Context, l Launch) error
	// Alive reports whether the VM's Firecracker process runs: it was launched, has not ended
	// and is not a zombie. A VM never launched is not alive.
	Alive(id, stateDir string) (bool, error)
	// Kill kills the VM's Firecracker process if it runs, and returns once it has ended.
	Kill(ctx context.Context, id, stateDir string) error
}

// pidFile records the Firecracker process in the VM's state directory, for Alive and Kill after a
// restart: "<pid> <start time> <boot id>". The start time (clock ticks after boot, from
// /proc/<pid>/stat) and the boot id tell the process from any later one given the same pid, and
// unlike its command line the process cannot change them. A record of an earlier provisioner
// holds the pid alone; its process is then known by its command line naming the VM.
const pidFile = "firecracker.pid"

// Bounds of the waits for a process: for the jailer's report of Firecracker's pid, and for a
// killed process to end.
const (
	pidReportWait = 10 * time.Second
	killWait      = 30 * time.Second
)

// ExecLauncher runs the command as a child process in its own process group, so the
// provisioner's signals do not reach it and a restart of the provisioner leaves it running. It
// knows the process by the record it keeps in the VM's state directory (pidFile).
type ExecLauncher struct{}

var _ Launcher = ExecLauncher{}

// Launch implements Launcher.
func (ExecLauncher) Launch(ctx context.Context, l Launch) error {
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
	// Until it is waited for, the child is in /proc even if it has already ended.
	proc, perr := readProcess(cmd.Process.Pid)
	exited := make(chan struct{})
	go func() {
		cmd.Wait() //nolint:errcheck,gosec // reaps the child; its end is seen in /proc
		close(exited)
	}()
	fail := func(err error) error {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck,gosec // unrecorded, it could not be found again
		if proc.pid != 0 && proc.pid != cmd.Process.Pid {
			syscall.Kill(proc.pid, syscall.SIGKILL) //nolint:errcheck,gosec // the jailer's Firecracker, unrecorded
		}
		return err
	}
	if perr != nil {
		return fail(fmt.Errorf("read the started process: %w", perr))
	}
	if l.PIDFile != "" {
		pid, err := waitPIDReport(ctx, l.PIDFile, exited)
		if err != nil {
			return fail(err)
		}
		if proc, err = readProcess(pid); err != nil {
			return fail(fmt.Errorf("firecracker (pid %d, as reported): %w", pid, err))
		}
		// Checked before the guest ran: the process is still the one the jailer started.
		if err := waitCommandNames(ctx, proc, l.ID); err != nil {
			return fail(err)
		}
	}
	if err := writeRecord(l.StateDir, proc); err != nil {
		return fail(fmt.Errorf("record pid: %w", err))
	}
	return nil
}

// waitPIDReport waits for the jailer's report of Firecracker's pid at path, until the jailer
// ended without one or pidReportWait passed.
func waitPIDReport(ctx context.Context, path string, exited <-chan struct{}) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, pidReportWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ended := false
		select {
		case <-exited:
			ended = true // the last look: it may have reported just before
		default:
		}
		pid, err := readPIDReport(path)
		if err == nil {
			return pid, nil
		}
		if ended {
			return 0, fmt.Errorf("the jailer ended without reporting Firecracker's pid: %w", err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no report of Firecracker's pid from the jailer: %w (%w)", ctx.Err(), err)
		case <-tick.C:
		case <-exited:
		}
	}
}

// waitCommandNames waits until the command line of the reported process names the VM. The jailer
// reports its child's pid as soon as it has it, and the child may be in the middle of its exec
// of Firecracker (its command line then empty for a moment).
func waitCommandNames(ctx context.Context, p process, id string) error {
	ctx, cancel := context.WithTimeout(ctx, pidReportWait)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !commandNames(p.pid, id) {
		if now, err := readProcess(p.pid); err != nil || ended(now) || now.start != p.start {
			return fmt.Errorf("the reported Firecracker, pid %d, ended at once", p.pid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the reported pid %d is not the VM's Firecracker: %w", p.pid, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// readPIDReport reads the jailer's pid file, inside the jail: only as a regular file.
func readPIDReport(path string) (int, error) {
	f, err := openRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close() //nolint:errcheck // read-only
	data, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s holds %q, not a pid", path, data)
	}
	return pid, nil
}

// Alive implements Launcher.
func (ExecLauncher) Alive(id, stateDir string) (bool, error) {
	p, err := running(id, stateDir)
	return p.pid != 0, err
}

// Kill implements Launcher: SIGKILL to the recorded process if it still runs (and to the process
// group it leads, the one it was started in), then a wait for its end. A pid that names another
// process by now is never signalled.
func (ExecLauncher) Kill(ctx context.Context, id, stateDir string) error {
	p, err := running(id, stateDir)
	if err != nil || p.pid == 0 {
		return err
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process %d: %w", p.pid, err)
	}
	if p.pgid == p.pid {
		if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill process group %d: %w", p.pid, err)
		}
	}
	// Waited for as the process found (by pid and start time): a dying process's command line
	// is empty before it is a zombie.
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		now, err := readProcess(p.pid)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || err == nil && (ended(now) || now.start != p.start) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker %d did not end after SIGKILL: %w", p.pid, ctx.Err())
		case <-tick.C:
		}
	}
}

// process is what /proc tells of a process, or what the record keeps of it.
type process struct {
	pid   int
	start uint64 // clock ticks after boot
	boot  string // the boot's id
	state byte   // R, S, D, Z, ...
	pgid  int
}

// running returns the VM's recorded process if it still runs; a zero process if it ended, is a
// zombie, or its pid names another process now (or if none was recorded).
func running(id, stateDir string) (process, error) {
	rec, err := readRecord(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return process{}, nil // never launched
	}
	if err != nil {
		return process{}, err
	}
	now, err := readProcess(rec.pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return process{}, nil
	}
	if err != nil {
		return process{}, err
	}
	switch {
	case ended(now):
		return process{}, nil // ended, not yet reaped
	case rec.boot != "" && rec.boot != now.boot:
		return process{}, nil // the host rebooted since
	case rec.start != 0 && rec.start != now.start:
		return process{}, nil // the pid was given to another process
	case rec.start == 0 && !commandNames(rec.pid, id):
		return process{}, nil // an earlier provisioner's record: known by its command line
	}
	return now, nil
}

func readRecord(stateDir string) (process, error) {
	path := filepath.Join(stateDir, pidFile)
	data, err := os.ReadFile(path) //nolint:gosec // the provisioner's state directory
	if err != nil {
		return process{}, err
	}
	fields := strings.Fields(string(data))
	bad := fmt.Errorf("bad pid record %s: %q", path, data)
	if len(fields) == 0 || len(fields) > 3 {
		return process{}, bad
	}
	var p process
	if p.pid, err = strconv.Atoi(fields[0]); err != nil || p.pid <= 1 {
		return process{}, bad
	}
	if len(fields) > 1 {
		if p.start, err = strconv.ParseUint(fields[1], 10, 64); err != nil {
			return process{}, bad
		}
	}
	if len(fields) > 2 {
		p.boot = fields[2]
	}
	return p, nil
}

// writeRecord records p in the state directory, so that a crash leaves the whole record or none.
func writeRecord(stateDir string, p process) error {
	tmp, err := os.CreateTemp(stateDir, pidFile+".*") // 0600
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(tmp, "%d %d %s\n", p.pid, p.start, p.boot)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(stateDir, pidFile))
	}
	if err != nil {
		os.Remove(tmp.Name()) //nolint:errcheck,gosec // the first error is the one to report
	}
	return err
}

// ended: the process is a zombie (or dead), its parent yet to reap it.
func ended(p process) bool { return p.state == 'Z' || p.state == 'X' }

// readProcess reads /proc/<pid>/stat: the state, process group and start time.
func readProcess(pid int) (process, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return process{}, err
	}
	// "pid (comm) state ppid pgrp ...": comm may hold anything, so fields count from its end.
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+1:]))
	if i < 0 || len(fields) < 20 || len(fields[0]) != 1 {
		return process{}, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, data)
	}
	p := process{pid: pid, state: fields[0][0], boot: bootID()}
	if p.pgid, err = strconv.Atoi(fields[2]); err != nil {
		return process{}, fmt.Errorf("/proc/%d/stat: process group %q", pid, fields[2])
	}
	if p.start, err = strconv.ParseUint(fields[19], 10, 64); err != nil {
		return process{}, fmt.Errorf("/proc/%d/stat: start time %q", pid, fields[19])
	}
	return p, nil
}

// commandNames reports whether the command line of process pid has the VM's id as an argument.
func commandNames(pid int, id string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains("\x00"+string(cmdline), "\x00"+id+"\x00")
}

// bootID is this boot's id ("" where the kernel does not say).
var bootID = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
})
