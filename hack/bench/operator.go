package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
)

// The operator runs as the binary it ships as (test/operatorproc), not in-process, so that
// /proc shows its CPU time and memory alone.

// startOperator runs the operator as it runs in a cluster (leader election, JSON logs at info).
// The kubeconfig goes in $KUBECONFIG by default, as the binary loads it in a cluster; with
// kubeconfigFlag it goes in --kubeconfig, as `make dev` passes it. Its log is
// operator-<name>.log; webhookAddr is its --webhook-bind-address ("0" for none).
// With records, the event and audit logs are written to dir as well. extra are further flags.
func startOperator(ctx context.Context, bin, dir, name, kubeconfig string, kubeconfigFlag, records bool, poll time.Duration, webhookAddr string, extra ...string) (*operatorproc.Process, error) {
	opts := operatorproc.Options{
		Args: []string{
			"--leader-elect=true",
			"--leader-election-namespace=" + leaseNamespace,
			"--poll-interval=" + poll.String(),
			"--webhook-bind-address=" + webhookAddr,
		},
		LogPath: filepath.Join(dir, "operator-"+name+".log"),
	}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--metrics-bind-address=") }) {
		opts.Args = append(opts.Args, "--metrics-bind-address=0")
	}
	opts.Args = append(opts.Args, extra...)
	if records {
		opts.Args = append(opts.Args,
			"--event-log-path="+filepath.Join(dir, "events-"+name+".jsonl"),
			"--audit-log-path="+filepath.Join(dir, "audit-"+name+".jsonl"))
	}
	if kubeconfigFlag {
		opts.Args = append(opts.Args, "--kubeconfig="+kubeconfig)
	} else {
		opts.Env = []string{"KUBECONFIG=" + kubeconfig}
	}
	return operatorproc.Start(ctx, bin, opts)
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

func operatorStats(op *operatorproc.Process) (procStats, error) {
	if exited, err := op.Exited(); exited {
		return procStats{}, fmt.Errorf("the operator exited (%w); see %s", err, op.LogPath)
	}
	st, err := readProcStats(op.Pid())
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
