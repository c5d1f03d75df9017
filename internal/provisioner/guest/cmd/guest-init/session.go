//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

// transport is how the init reaches the provisioner: two channels, whatever carries them
// (transport.go). Everything in this file is the same over each.
type transport interface {
	// openConfig makes one attempt at connecting the configuration channel.
	openConfig() (io.ReadWriteCloser, error)
	// openLog makes one attempt at connecting the log stream.
	openLog() (io.ReadWriteCloser, error)
	// resumes tells whether a log stream that broke is dialled again and resumed
	// (guest.LogResume: a vsock connection ends when the provisioner's end closes), or stays the
	// same stream while the host is away (a virtio-serial port: writes wait for the host).
	resumes() bool
}

// options are the init's settings, from the kernel command line.
type options struct {
	// boot is when the init started, for the figures it reports.
	boot time.Time
	// wait bounds the wait for a channel to appear at first.
	wait time.Duration
	// ackTimeout bounds each wait for guest.LogAck.
	ackTimeout time.Duration
	// redial is the pause between two dials of a broken log stream.
	redial time.Duration
	// probes are addresses to report reachable or not on the log stream.
	probes []string
	// say writes to the serial console.
	say func(format string, args ...any)
}

// runnerFunc runs the runner with the configuration, its output going to the log stream, and
// returns its exit code.
type runnerFunc func(cfg driver.GuestConfig, logw *logStream) (int, error)

// serve is the init's work once the machine is up: take the configuration, have the log stream
// acknowledged, and only then run the runner; report its end. It returns an error, without
// starting the runner, when the configuration or the acknowledgement does not come.
func serve(tr transport, o options, runner runnerFunc) error {
	cfg, err := readConfig(tr, o.wait)
	if err != nil {
		return err
	}
	o.say("configuration received for %s", cfg.VMID)

	logw, err := openLogStream(tr, cfg.VMID, o)
	if err != nil {
		// The point of the handshake: without a log stream the runner must not take a job.
		return fmt.Errorf("%w; not starting the runner", err)
	}
	logw.printf("log stream acknowledged %s after boot", time.Since(o.boot).Round(time.Millisecond))

	for _, a := range o.probes {
		conn, derr := net.DialTimeout("tcp", a, 3*time.Second)
		if derr != nil {
			logw.printf("probe %s: unreachable: %v", a, derr)
			continue
		}
		conn.Close() //nolint:errcheck,gosec // only reachability matters
		logw.printf("probe %s: reachable", a)
	}

	code, err := runner(cfg, logw)
	if err != nil {
		logw.printf("runner: %v", err)
	}
	logw.line(fmt.Sprintf("%s %s %d", guest.LogEvent, guest.EventRunnerExited, code))
	logw.printf("runner exited with code %d; powering off", code)
	logw.close()
	return nil
}

// connect calls open until it succeeds or wait has passed: a channel can take a moment to
// appear (a module's device probed asynchronously).
func connect(open func() (io.ReadWriteCloser, error), wait time.Duration) (io.ReadWriteCloser, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := open()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readConfig asks for the configuration and reads it, once: the provisioner closes the channel
// after writing it, and it is closed here too, so nothing in the guest can read it again.
func readConfig(tr transport, wait time.Duration) (driver.GuestConfig, error) {
	var cfg driver.GuestConfig
	ch, err := connect(tr.openConfig, wait)
	if err != nil {
		return cfg, err
	}
	defer ch.Close() // read once
	if _, err := io.WriteString(ch, guest.TokenRequest+"\n"); err != nil {
		return cfg, fmt.Errorf("ask for configuration: %w", err)
	}
	line, err := bufio.NewReader(ch).ReadBytes('\n')
	defer clear(line)
	if err != nil {
		return cfg, fmt.Errorf("read configuration: %w", err)
	}
	if err := json.Unmarshal(line, &cfg); err != nil {
		return cfg, fmt.Errorf("decode configuration: %w", err)
	}
	return cfg, nil
}

// logStream writes whole lines to the log stream. When a resumable stream breaks, a line waits
// (and with it whoever writes it: the runner's output copier, then the runner on its full pipe)
// until the stream is dialled again and resumed; the line whose write failed is written first.
type logStream struct {
	vmID string
	o    options
	// redial makes one attempt at connecting the stream again; nil when it does not break.
	redial func() (io.ReadWriteCloser, error)

	mu     sync.Mutex
	conn   io.ReadWriteCloser // nil while broken
	closed bool
}

// openLogStream connects the log stream and has it acknowledged.
func openLogStream(tr transport, vmID string, o options) (*logStream, error) {
	conn, err := connect(tr.openLog, o.wait)
	if err != nil {
		return nil, err
	}
	rd, err := handshake(conn, guest.LogHello+" "+vmID, o.ackTimeout)
	if err != nil {
		conn.Close() // the handshake's error is the one to report
		return nil, err
	}
	l := &logStream{vmID: vmID, o: o, conn: conn}
	if tr.resumes() {
		l.redial = tr.openLog
		watch(conn, rd)
	}
	return l, nil
}

// handshake writes the hello (or the resume) and waits for the acknowledgement.
func handshake(conn io.ReadWriteCloser, hello string, timeout time.Duration) (*bufio.Reader, error) {
	if _, err := io.WriteString(conn, hello+"\n"); err != nil {
		return nil, fmt.Errorf("log port hello: %w", err)
	}
	rd := bufio.NewReader(conn)
	got := make(chan error, 1)
	go func() {
		line, err := rd.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != guest.LogAck {
			err = fmt.Errorf("unexpected answer %q", strings.TrimSpace(line))
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return nil, fmt.Errorf("log stream not acknowledged: %w", err)
		}
		return rd, nil
	case <-time.After(timeout):
		// The reader ends when the caller closes conn.
		return nil, fmt.Errorf("log stream not acknowledged within %s", timeout)
	}
}

// watch closes conn once the host's end has closed (the host says nothing after its
// acknowledgement): the next write then fails at once, rather than into a dying connection.
func watch(conn io.ReadWriteCloser, rd *bufio.Reader) {
	go func() {
		for {
			if _, err := rd.ReadString('\n'); err != nil {
				break
			}
		}
		conn.Close() // broken; the writer dials again
	}()
}

func (l *logStream) printf(format string, args ...any) {
	l.line(fmt.Sprintf("guest-init: "+format, args...))
}

func (l *logStream) line(s string) {
	data := strings.TrimRight(s, "\r\n") + "\n"
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed {
		if l.conn == nil {
			l.resume()
		}
		_, err := io.WriteString(l.conn, data)
		if err == nil {
			return
		}
		if l.redial == nil {
			l.o.say("log port: %v", err)
			return
		}
		l.o.say("log stream broken (%v); holding the runner's output until it is resumed", err)
		l.conn.Close() // broken
		l.conn = nil
	}
}

// resume dials the log stream until a provisioner acknowledges it. Called with l.mu held: every
// line waits meanwhile.
func (l *logStream) resume() {
	for attempt := 1; ; attempt++ {
		conn, err := l.redial()
		if err == nil {
			var rd *bufio.Reader
			if rd, err = handshake(conn, guest.LogResume+" "+l.vmID, l.o.ackTimeout); err == nil {
				l.conn = conn
				watch(conn, rd)
				l.o.say("log stream resumed (attempt %d)", attempt)
				return
			}
			conn.Close() // not acknowledged: dial again
		}
		if attempt == 1 || attempt%60 == 0 {
			l.o.say("log stream: %v; dialling again every %s (attempt %d)", err, l.o.redial, attempt)
		}
		time.Sleep(l.o.redial)
	}
}

// close ends the stream: lines after it go nowhere.
func (l *logStream) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.conn != nil {
		l.conn.Close() // the end of the stream (perhaps closed by watch already)
	}
}
