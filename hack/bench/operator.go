package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The operator runs as the binary it ships as, not in-process, so that /proc shows its CPU time
// and memory alone. Start-up follows hack/dev's startOperator, which cannot be imported.

func buildOperator(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "forgejo-runner-operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/forgejo-runner-operator")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build the operator: %w", err)
	}
	return bin, nil
}

type operatorProcess struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startOperator runs the operator as it runs in a cluster (leader election, JSON logs at info)
// and waits for its /readyz.
//
// The kubeconfig goes in $KUBECONFIG rather than --kubeconfig by default: the binary then loads
// it through controller-runtime as it loads the in-cluster config, with client-side rate
// limiting off, whereas --kubeconfig keeps client-go's default of 5 requests/s (burst 10), which
// a production operator does not have. kubeconfigFlag measures the latter, which `make dev` runs.
// Its log is operator-<name>.log; webhookAddr is its --webhook-bind-address ("0" for none).
func startOperator(ctx context.Context, bin, dir, name, kubeconfig string, kubeconfigFlag bool, poll time.Duration, webhookAddr string) (*operatorProcess, error) {
	probeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "operator-"+name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("open the operator log: %w", err)
	}
	args := []string{
		"--leader-elect=true",
		"--leader-election-namespace=" + leaseNamespace,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + probeAddr,
		"--poll-interval=" + poll.String(),
		"--webhook-bind-address=" + webhookAddr,
	}
	cmd := exec.Command(bin, args...)
	if kubeconfigFlag {
		cmd.Args = append(cmd.Args, "--kubeconfig="+kubeconfig)
	} else {
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group so that stop reaches it alone; killed with us should we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start the operator: %w", err)
	}
	op := &operatorProcess{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		op.err = cmd.Wait()
		_ = logFile.Close()
		close(op.done)
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-op.done:
			return nil, fmt.Errorf("the operator exited before it was ready (%w); see %s", op.err, logPath)
		case <-ctx.Done():
			op.stop()
			return nil, fmt.Errorf("wait for the operator to be ready: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if ready(ctx, "http://"+probeAddr+"/readyz") {
			return op, nil
		}
		if time.Now().After(deadline) {
			op.stop()
			return nil, fmt.Errorf("the operator was not ready after two minutes; see %s", logPath)
		}
	}
}

func ready(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// freeAddr picks a free loopback port for the operator to listen on. Another process could take
// it before the operator binds it; the operator then fails to start and says so.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the operator: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("find a free port for the operator: %w", err)
	}
	return addr, nil
}

func (op *operatorProcess) stop() {
	pgid := -op.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-op.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-op.done
	}
}

// procStats is what /proc tells of a process.
type procStats struct {
	CPU time.Duration // user + system
	HWM int64         // peak resident set, bytes
	RSS int64         // resident set now, bytes
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat. The kernel reports them in USER_HZ,
// which is 100 on every architecture Go supports on Linux, whatever the kernel's own HZ.
const userHZ = 100

func (op *operatorProcess) stats() (procStats, error) {
	pid := op.cmd.Process.Pid
	select {
	case <-op.done:
		return procStats{}, fmt.Errorf("the operator exited (%w); see %s", op.err, op.logPath)
	default:
	}
	st, err := readProcStats(pid)
	if err != nil {
		return procStats{}, fmt.Errorf("read the operator's figures from /proc: %w", err)
	}
	return st, nil
}

func readProcStats(pid int) (procStats, error) {
	var st procStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or parentheses itself;
	// the fields after the last ')' start with field 3, the state.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return st, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(fields))
	}
	var ticks int64
	for _, f := range []string{fields[utime], fields[stime]} {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	st.CPU = time.Duration(ticks) * time.Second / userHZ

	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/status %s: %w", pid, name, err)
		}
		if name == "VmHWM" {
			st.HWM = kb * 1024
		} else {
			st.RSS = kb * 1024
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	if st.HWM == 0 {
		return st, errors.New("/proc/" + strconv.Itoa(pid) + "/status has no VmHWM")
	}
	return st, nil
}

// summarizeLog counts the operator's error lines by message: enough to tell a stuck run's cause
// from a slow one without opening the log.
func summarizeLog(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lines := 0
	errs := map[string]int{}
	for sc.Scan() {
		lines++
		var entry struct{ Level, Msg, Error string }
		if json.Unmarshal(sc.Bytes(), &entry) != nil || entry.Level != "error" {
			continue
		}
		msg := entry.Msg
		if entry.Error != "" {
			msg += ": " + entry.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		errs[msg]++
	}
	if len(errs) == 0 {
		return fmt.Sprintf("%d lines, no errors", lines)
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return errs[keys[i]] > errs[keys[j]] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys[:min(len(keys), 3)] {
		parts = append(parts, fmt.Sprintf("%d× %s", errs[k], k))
	}
	return fmt.Sprintf("%d lines; errors: %s", lines, strings.Join(parts, "; "))
}
