//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

// pipeTransport gives the init the guest's ends of in-memory pipes and the test their host
// ends: the test plays the provisioner.
type pipeTransport struct {
	resumable bool
	configs   chan net.Conn
	logs      chan net.Conn

	mu       sync.Mutex
	logFails int // the next openLog calls that fail, as a dial finding no listener does
	logDials int
}

func newPipeTransport(resumable bool) *pipeTransport {
	return &pipeTransport{resumable: resumable, configs: make(chan net.Conn, 4), logs: make(chan net.Conn, 4)}
}

func (p *pipeTransport) openConfig() (io.ReadWriteCloser, error) {
	g, h := net.Pipe()
	p.configs <- h
	return g, nil
}

func (p *pipeTransport) openLog() (io.ReadWriteCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logDials++
	if p.logFails > 0 {
		p.logFails--
		return nil, errors.New("connection reset by peer")
	}
	g, h := net.Pipe()
	p.logs <- h
	return g, nil
}

func (p *pipeTransport) resumes() bool { return p.resumable }

func (p *pipeTransport) failNextDials(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logFails = n
}

func (p *pipeTransport) dials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logDials
}

// host is the provisioner's end of one channel.
type host struct {
	t    *testing.T
	conn net.Conn
	rd   *bufio.Reader
}

func accept(t *testing.T, ch chan net.Conn) *host {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() }) //nolint:errcheck,gosec // test teardown
		return &host{t: t, conn: c, rd: bufio.NewReader(c)}
	case <-time.After(5 * time.Second):
		t.Fatal("the guest never connected")
		return nil
	}
}

// expect reads the guest's next line and checks it starts with prefix.
func (h *host) expect(prefix string) string {
	h.t.Helper()
	h.conn.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck,gosec // a pipe
	line, err := h.rd.ReadString('\n')
	line = strings.TrimRight(line, "\n")
	if err != nil || !strings.HasPrefix(line, prefix) {
		h.t.Fatalf("guest wrote %q, %v; want %q…", line, err, prefix)
	}
	return line
}

func (h *host) send(line string) {
	h.t.Helper()
	h.conn.SetWriteDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck,gosec // a pipe
	if _, err := io.WriteString(h.conn, line+"\n"); err != nil {
		h.t.Fatalf("host writes %q: %v", line, err)
	}
}

// serveConfig answers the guest's request for its configuration, once.
func serveConfig(t *testing.T, p *pipeTransport, cfg driver.GuestConfig) {
	t.Helper()
	go func() {
		c := <-p.configs
		defer c.Close() //nolint:errcheck // once
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != guest.TokenRequest+"\n" {
			t.Errorf("guest asked %q, %v; want %s", line, err, guest.TokenRequest)
			return
		}
		data, _ := json.Marshal(cfg)
		c.Write(append(data, '\n')) //nolint:errcheck,gosec // the guest reads it or the test fails
	}()
}

// console collects what the init says on its serial console.
type console struct {
	mu    sync.Mutex
	lines []string
}

func (c *console) say(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, fmt.Sprintf(format, args...))
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

func testOptions(c *console) options {
	return options{boot: time.Now(), wait: time.Second, ackTimeout: 300 * time.Millisecond, redial: 10 * time.Millisecond, say: c.say}
}

var testConfig = driver.GuestConfig{VMID: "vm-t", ForgejoURL: "http://forgejo", RegistrationUUID: "uuid", Token: "tok-secret"}

// TestUnacknowledgedLogStreamNeverStartsTheRunner is "logs before work" in the init: whatever
// keeps the acknowledgement from coming (silence, another answer, the host closing), on either
// transport, the runner is never started.
func TestUnacknowledgedLogStreamNeverStartsTheRunner(t *testing.T) {
	for _, c := range []struct {
		name string
		host func(h *host)
		want string
	}{
		{"silence", func(*host) {}, "log stream not acknowledged within 300ms; not starting the runner"},
		{"another answer", func(h *host) { h.send("NAK") }, `log stream not acknowledged: unexpected answer "NAK"; not starting the runner`},
		{"host closes", func(h *host) { h.conn.Close() }, "log stream not acknowledged: EOF; not starting the runner"}, //nolint:errcheck,gosec // the test's pipe
	} {
		for _, resumable := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/resumable=%v", c.name, resumable), func(t *testing.T) {
				p := newPipeTransport(resumable)
				serveConfig(t, p, testConfig)
				var started atomic.Bool
				done := make(chan error, 1)
				var con console
				go func() {
					done <- serve(p, testOptions(&con), func(driver.GuestConfig, *logStream) (int, error) {
						started.Store(true)
						return 0, nil
					})
				}()
				h := accept(t, p.logs)
				h.expect(guest.LogHello + " vm-t")
				c.host(h)
				select {
				case err := <-done:
					if err == nil || err.Error() != c.want {
						t.Errorf("serve: %v; want %q", err, c.want)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("serve did not give up")
				}
				if started.Load() {
					t.Error("the runner was started without an acknowledged log stream")
				}
				if n := p.dials(); n != 1 {
					t.Errorf("the log stream was dialled %d times; the hello is not resumed", n)
				}
			})
		}
	}
}

// TestBrokenLogStreamIsResumed: the provisioner's end of a vsock log stream closes (it
// restarted). The runner's next line waits, without being lost, while the stream is dialled
// again (dials that find nobody, a provisioner that does not acknowledge) until a provisioner
// acknowledges the resume; then it and the lines after it arrive in order.
func TestBrokenLogStreamIsResumed(t *testing.T) {
	p := newPipeTransport(true)
	serveConfig(t, p, testConfig)
	proceed := make(chan struct{})
	var wroteTwo atomic.Bool
	done := make(chan error, 1)
	var con console
	go func() {
		done <- serve(p, testOptions(&con), func(cfg driver.GuestConfig, logw *logStream) (int, error) {
			if cfg.Token != "tok-secret" {
				t.Errorf("runner got %+v", cfg)
			}
			logw.line(guest.LogEvent + " " + guest.EventRunnerStarted)
			logw.line("runner: one")
			<-proceed
			logw.line("runner: two")
			wroteTwo.Store(true)
			logw.line("runner: three")
			return 7, nil
		})
	}()

	h1 := accept(t, p.logs)
	h1.expect(guest.LogHello + " vm-t")
	h1.send(guest.LogAck)
	h1.expect("guest-init: log stream acknowledged")
	h1.expect(guest.LogEvent + " " + guest.EventRunnerStarted)
	h1.expect("runner: one")
	// The provisioner goes away: its end closes, and the next dials find nobody.
	p.failNextDials(2)
	h1.conn.Close() //nolint:errcheck,gosec // the provisioner exits
	close(proceed)

	// A provisioner that does not acknowledge (its sink refuses) is not written to.
	h2 := accept(t, p.logs)
	h2.expect(guest.LogResume + " vm-t")
	h2.conn.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck,gosec // a pipe
	if line, err := h2.rd.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("guest wrote %q, %v to an unacknowledged stream; want it to close and dial again", line, err)
	}

	h3 := accept(t, p.logs)
	h3.expect(guest.LogResume + " vm-t")
	if wroteTwo.Load() {
		t.Fatal("the runner's line was taken while the stream was broken")
	}
	h3.send(guest.LogAck)
	h3.expect("runner: two")
	h3.expect("runner: three")
	h3.expect(guest.LogEvent + " " + guest.EventRunnerExited + " 7")
	h3.expect("guest-init: runner exited with code 7; powering off")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not end")
	}
	if n := p.dials(); n != 5 {
		t.Errorf("log stream dialled %d times, want 5 (hello, 2 finding nobody, unacknowledged, resumed)", n)
	}
	if say := con.String(); !strings.Contains(say, "holding the runner's output until it is resumed") || !strings.Contains(say, "log stream resumed (attempt 4)") {
		t.Errorf("console:\n%s", say)
	}
}

// TestVirtioSerialStreamIsNotResumed: a virtio-serial port is the same stream for the VM's
// life (writes wait while the host is away), so a failed write is reported on the console and
// the port is never dialled again.
func TestVirtioSerialStreamIsNotResumed(t *testing.T) {
	p := newPipeTransport(false)
	serveConfig(t, p, testConfig)
	done := make(chan error, 1)
	var con console
	proceed := make(chan struct{})
	go func() {
		done <- serve(p, testOptions(&con), func(_ driver.GuestConfig, logw *logStream) (int, error) {
			<-proceed
			logw.line("runner: into a closed port")
			return 0, nil
		})
	}()
	h := accept(t, p.logs)
	h.expect(guest.LogHello + " vm-t")
	h.send(guest.LogAck)
	h.expect("guest-init: log stream acknowledged")
	h.conn.Close() //nolint:errcheck,gosec // the port fails
	close(proceed)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not end")
	}
	if n := p.dials(); n != 1 {
		t.Errorf("port opened %d times, want 1", n)
	}
	if say := con.String(); !strings.Contains(say, "log port: ") {
		t.Errorf("console:\n%s", say)
	}
}

func TestTransportFor(t *testing.T) {
	for name, want := range map[string]bool{"": false, guest.TransportVirtioSerial: false, guest.TransportVsock: true} {
		tr, err := transportFor(name)
		if err != nil || tr.resumes() != want {
			t.Errorf("transportFor(%q) = %T, %v", name, tr, err)
		}
	}
	if _, err := transportFor("carrier-pigeon"); err == nil {
		t.Error("an unknown transport was accepted")
	}
}
