// Package fctest runs the Firecracker driver against stand-ins of Firecracker's API
// (fcstandin) instead of Firecracker processes, for the tests of what sits above the driver.
//
// Each VM still gets a real process, started, recorded, watched and killed by the driver's own
// firecracker.ExecLauncher: a shell that waits forever, its command line naming the VM as
// Firecracker's does. So whether a VM runs is told as in production, from its process, and
// Destroy really kills and waits for one.
package fctest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fcstandin"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestlog"
)

// ConsoleOutput is what a stand-in "guest" writes to its serial console (Firecracker's standard
// output) when started.
const ConsoleOutput = "Linux version 6.1.0 (stand-in guest)\n"

// ConsoleLine is how ConsoleOutput appears in the VM's log, the file the driver's ConsoleLog
// names and StreamLogs serves: with the console's prefix.
const ConsoleLine = guestlog.ConsolePrefix + ConsoleOutput

// Launcher is a firecracker.Launcher whose Firecrackers are stand-ins: the API served in this
// process, and a waiting shell for the process (run by firecracker.ExecLauncher). It outlives a
// driver, as a host's processes outlive a provisioner restart.
type Launcher struct {
	spec *fcstandin.Spec
	exec firecracker.ExecLauncher
	// marker is a FIFO nobody writes to: the stand-in processes wait on it, and its path in their
	// command lines tells them from any other process. hold keeps it open for writing: when the
	// test process ends, however it ends, the stand-ins read its end and end too.
	marker string
	hold   *os.File

	mu       sync.Mutex
	servers  map[string]*fcstandin.Server
	launches map[string]firecracker.Launch
	order    []firecracker.Launch
}

// NewLauncher loads Firecracker's API description and returns a Launcher; its stand-ins are
// stopped when the test ends.
func NewLauncher(t testing.TB) *Launcher {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	spec, err := fcstandin.LoadSpec(filepath.Join(filepath.Dir(file), "..", "fcstandin", "testdata", "firecracker-api-v1.15.1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "fctest-standin.fifo")
	if err := syscall.Mkfifo(marker, 0o600); err != nil {
		t.Fatal(err)
	}
	hold, err := os.OpenFile(marker, os.O_RDWR, 0) // O_RDWR: no wait for a reader
	if err != nil {
		t.Fatal(err)
	}
	l := &Launcher{spec: spec, marker: marker, hold: hold, servers: map[string]*fcstandin.Server{}, launches: map[string]firecracker.Launch{}}
	t.Cleanup(func() {
		l.mu.Lock()
		for _, s := range l.servers {
			s.Close() //nolint:errcheck,gosec // test teardown
		}
		l.mu.Unlock()
		l.end("")    // every stand-in process left
		hold.Close() //nolint:errcheck,gosec // test teardown
	})
	return l
}

// The stand-in process: a shell running one of these scripts. $0 is the marker, then come the
// jailer's pid file (when jailed) and "--id <vm id>", as in Firecracker's command line. The shell
// waits on the marker (one process, no child). Jailed, it reports a pid as the jailer does, in a
// file that must not exist yet: its own before it would become Firecracker, or, for
// --new-pid-ns, that of a child it leaves waiting before it ends.
const (
	shell        = "/bin/sh"
	waitScript   = `read -r x < "$0"`
	jailedScript = `set -C; echo $$ > "$1" || exit 1; ` + waitScript
	pidnsScript  = `set -C; ` + shell + ` -c '` + waitScript + `' "$0" --id "$3" & echo $! > "$1" || exit 1`
)

// argv is the stand-in process's command line for launch.
func (l *Launcher) argv(launch firecracker.Launch) []string {
	switch {
	case launch.PIDFile == "":
		return []string{shell, "-c", waitScript, l.marker, "--id", launch.ID}
	case slices.Contains(launch.Argv, "--new-pid-ns"):
		return []string{shell, "-c", pidnsScript, l.marker, launch.PIDFile, "--id", launch.ID}
	default:
		return []string{shell, "-c", jailedScript, l.marker, launch.PIDFile, "--id", launch.ID}
	}
}

// Launch implements firecracker.Launcher.
func (l *Launcher) Launch(ctx context.Context, launch firecracker.Launch) error {
	srv := fcstandin.New(l.spec, launch.ID)
	srv.OnAction(func(action string) {
		if action != "InstanceStart" {
			return
		}
		if f, err := os.OpenFile(launch.Console, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.WriteString(ConsoleOutput) //nolint:errcheck,gosec // console noise
			f.Close()                    //nolint:errcheck,gosec // console noise
		}
	})
	if err := srv.Listen(launch.APISocket); err != nil {
		return err
	}
	process := launch
	process.Argv = l.argv(launch)
	if err := l.exec.Launch(ctx, process); err != nil {
		srv.Close() //nolint:errcheck,gosec // the launch error is the one to report
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[launch.ID] = srv
	l.launches[launch.ID] = launch
	l.order = append(l.order, launch)
	return nil
}

// Alive implements firecracker.Launcher: firecracker.ExecLauncher's, of the stand-in process.
func (l *Launcher) Alive(id, stateDir string) (bool, error) {
	return l.exec.Alive(id, stateDir)
}

// Kill implements firecracker.Launcher: firecracker.ExecLauncher kills the stand-in process, and
// its API ends.
func (l *Launcher) Kill(ctx context.Context, id, stateDir string) error {
	err := l.exec.Kill(ctx, id, stateDir)
	l.mu.Lock()
	srv := l.servers[id]
	delete(l.servers, id)
	l.mu.Unlock()
	if srv != nil {
		if cerr := srv.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Exit ends a stand-in as if its Firecracker process had exited: its API and its process end.
func (l *Launcher) Exit(id string) {
	l.mu.Lock()
	srv := l.servers[id]
	l.mu.Unlock()
	if srv != nil {
		srv.Close() //nolint:errcheck,gosec // it "exits"
	}
	l.end(id)
}

// end kills the stand-in processes of VM id (of every VM when id is empty) and waits until they
// have ended. They are found by the marker in their command lines.
func (l *Launcher) end(id string) {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), "\x00"+l.marker+"\x00") ||
			(id != "" && !strings.Contains(string(cmdline), "\x00"+id+"\x00")) {
			continue
		}
		syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck,gosec // it may have ended meanwhile
		pids = append(pids, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(stat), ") Z ") {
				break // ended (a zombie until its parent reaps it)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Server returns a VM's stand-in, nil when it has none.
func (l *Launcher) Server(id string) *fcstandin.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers[id]
}

// Running counts the stand-ins not killed.
func (l *Launcher) Running() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.servers)
}

// Launches returns every launch so far, in order.
func (l *Launcher) Launches() []firecracker.Launch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order)
}

// GuestConnect connects to the host as Firecracker does for a guest that dials the host (CID 2)
// on port: to the Unix socket <uds_path>_<port>, where uds_path is what the driver gave
// PUT /vsock (inside the jail's root when jailed, as Firecracker sees it from its chroot).
func (l *Launcher) GuestConnect(id string, port int) (net.Conn, error) {
	l.mu.Lock()
	srv, launch := l.servers[id], l.launches[id]
	l.mu.Unlock()
	if srv == nil {
		return nil, fmt.Errorf("no Firecracker for %s", id)
	}
	var uds string
	for _, r := range srv.Requests() {
		if r.Method != http.MethodPut || r.Path != "/vsock" || r.Status >= 300 {
			continue
		}
		var body struct {
			UDSPath string `json:"uds_path"`
		}
		if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
			return nil, fmt.Errorf("PUT /vsock body: %w", err)
		}
		uds = body.UDSPath
	}
	if uds == "" {
		return nil, fmt.Errorf("%s has no vsock device", id)
	}
	if slices.Contains(launch.Argv, "--chroot-base-dir") {
		uds = filepath.Join(launch.Dir, uds)
	}
	return net.Dial("unix", fmt.Sprintf("%s_%d", uds, port))
}

// ReadGuestConfig plays the guest taking its configuration: it dials GuestConfigPort, sends
// the request line as the guest init does and reads the one line it is given.
func (l *Launcher) ReadGuestConfig(id string) (string, error) {
	conn, err := l.GuestConnect(id, firecracker.GuestConfigPort)
	if err != nil {
		return "", err
	}
	defer conn.Close() //nolint:errcheck // read in full
	if _, err := io.WriteString(conn, guest.TokenRequest+"\n"); err != nil {
		return "", fmt.Errorf("request the configuration: %w", err)
	}
	data, err := io.ReadAll(conn)
	if err != nil {
		return "", fmt.Errorf("read the configuration: %w", err)
	}
	if n := strings.Count(string(data), "\n"); n != 1 || !strings.HasSuffix(string(data), "\n") {
		return string(data), fmt.Errorf("configuration %q is not one line", data)
	}
	return string(data), nil
}
