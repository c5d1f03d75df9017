// Package fctest runs the Firecracker driver against stand-ins of Firecracker's API
// (fcstandin) instead of Firecracker processes, for the tests of what sits above the driver.
package fctest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver/firecracker/fcstandin"
)

// ConsoleLine is what a stand-in "guest" writes to its console when started.
const ConsoleLine = "Linux version 6.1.0 (stand-in guest)\n"

// Launcher is a firecracker.Launcher whose processes are stand-ins served in this process. It
// outlives a driver, as a host's processes outlive a provisioner restart.
type Launcher struct {
	spec *fcstandin.Spec

	mu      sync.Mutex
	servers map[string]*fcstandin.Server
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
	l := &Launcher{spec: spec, servers: map[string]*fcstandin.Server{}}
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
			f.WriteString(ConsoleLine) //nolint:errcheck,gosec // console noise
			f.Close()                  //nolint:errcheck,gosec // console noise
		}
	})
	if err := srv.Listen(launch.APISocket); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[launch.ID] = srv
	return nil
}

// Kill implements firecracker.Launcher.
func (l *Launcher) Kill(_ context.Context, id, _ string) error {
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
