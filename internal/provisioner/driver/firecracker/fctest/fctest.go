// Package fctest runs the Firecracker driver against stand-ins of Firecracker's API
// (fcstandin) instead of Firecracker processes, for the tests of what sits above the driver.
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
	"strings"
	"sync"
	"testing"

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

// Launcher is a firecracker.Launcher whose processes are stand-ins served in this process. It
// outlives a driver, as a host's processes outlive a provisioner restart.
type Launcher struct {
	spec *fcstandin.Spec

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
	l := &Launcher{spec: spec, servers: map[string]*fcstandin.Server{}, launches: map[string]firecracker.Launch{}}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.servers {
			s.Close() //nolint:errcheck,gosec // test teardown
		}
	})
	return l
}

// Launch implements firecracker.Launcher.
func (l *Launcher) Launch(_ context.Context, launch firecracker.Launch) error {
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
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[launch.ID] = srv
	l.launches[launch.ID] = launch
	l.order = append(l.order, launch)
	return nil
}

// Kill implements firecracker.Launcher.
func (l *Launcher) Kill(_ context.Context, id, _ /* stateDir */ string) error {
	l.mu.Lock()
	srv := l.servers[id]
	delete(l.servers, id)
	l.mu.Unlock()
	if srv != nil {
		return srv.Close()
	}
	return nil
}

// Exit ends a stand-in as if its Firecracker process had exited.
func (l *Launcher) Exit(id string) {
	l.mu.Lock()
	srv := l.servers[id]
	l.mu.Unlock()
	if srv != nil {
		srv.Close() //nolint:errcheck,gosec // it "exits"
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
