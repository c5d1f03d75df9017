// Package operatorproc builds the operator binary from this checkout and runs it as its own
// process, the way it runs in a cluster: `make dev` and `make bench` both start it this way.
package operatorproc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Build compiles ./cmd/forgejo-runner-operator of the repository at root into dir.
func Build(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "forgejo-runner-operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/forgejo-runner-operator")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build the operator: %w", err)
	}
	return bin, nil
}

// Options of a started operator.
type Options struct {
	// Args are the operator's flags; Start adds --health-probe-bind-address.
	Args []string
	// Env is added to the environment the operator inherits.
	Env []string
	// LogPath receives its standard output and error.
	LogPath string
}

// Process is a running operator.
type Process struct {
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Start runs the operator and waits until its /readyz answers, or it exits, or two minutes pass.
func Start(ctx context.Context, bin string, opts Options) (*Process, error) {
	probeAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(opts.LogPath)
	if err != nil {
		return nil, fmt.Errorf("open the operator log: %w", err)
	}
	cmd := exec.Command(bin, append(opts.Args, "--health-probe-bind-address="+probeAddr)...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group so that Stop reaches it alone; killed with us should we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start the operator: %w", err)
	}
	p := &Process{LogPath: opts.LogPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("the operator exited before it was ready (%w); see %s", p.err, p.LogPath)
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("wait for the operator to be ready: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if ready(ctx, "http://"+probeAddr+"/readyz") {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("the operator was not ready after two minutes; see %s", p.LogPath)
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

// Pid is the operator's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the operator has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, then SIGKILL after 15 seconds, and waits for the operator to end.
func (p *Process) Stop() {
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
	}
}

// FreeAddr picks a free loopback address. Another process could take it before the operator
// binds it; the operator then fails to start and says so.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}
