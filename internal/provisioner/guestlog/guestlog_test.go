package guestlog_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestlog"
)

type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buffer) Close() error                { return nil }
func (b *buffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// fixture is one VM's stream with the events it reported.
type fixture struct {
	t      *testing.T
	log    buffer
	stream *guestlog.Stream
	mu     sync.Mutex
	seen   []driver.GuestEvent
}

func newFixture(t *testing.T, limit int64) *fixture {
	f := &fixture{t: t}
	f.stream = guestlog.NewStream("vm-1", guestlog.NewSink(&f.log, logr.Discard(), limit), func(ev driver.GuestEvent) {
		f.mu.Lock()
		f.seen = append(f.seen, ev)
		f.mu.Unlock()
	})
	return f
}

func (f *fixture) events() []driver.GuestEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]driver.GuestEvent(nil), f.seen...)
}

// conn is one guest connection being served.
type conn struct {
	t    *testing.T
	g    net.Conn
	r    *bufio.Reader
	done chan struct{}
}

func (f *fixture) connect() *conn {
	host, g := net.Pipe()
	c := &conn{t: f.t, g: g, r: bufio.NewReader(g), done: make(chan struct{})}
	go func() { defer close(c.done); f.stream.Serve(host) }()
	f.t.Cleanup(func() { g.Close() }) //nolint:errcheck,gosec // may be closed already
	return c
}

func (c *conn) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.g, s+"\n"); err != nil {
		c.t.Fatalf("guest write %q: %v", s, err)
	}
}

// answer is the host's next line, or "" when it closed or said nothing within a while.
func (c *conn) answer() string {
	got := make(chan string, 1)
	go func() {
		line, _ := c.r.ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		return line
	case <-time.After(300 * time.Millisecond):
		return ""
	}
}

func (c *conn) end() {
	c.g.Close() //nolint:errcheck,gosec // ends the stream
	<-c.done
}

func TestHelloIsAcknowledgedOnlyOnceWritten(t *testing.T) {
	f := newFixture(t, 0)
	c := f.connect()
	c.write("HELLO vm-1")
	if ack := c.answer(); ack != "ACK\n" {
		t.Fatalf("answer to hello: %q", ack)
	}
	c.write("EVENT runner-started")
	c.write("runner: EVENT runner-exited 0") // the runner's own output: not an event
	c.write("EVENT runner-exited 3")
	c.write("EVENT reboot-host") // unknown: kept as a line
	c.end()

	got := f.events()
	want := []driver.GuestEventKind{driver.GuestLogOpen, driver.GuestRunnerStarted, driver.GuestRunnerExited}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want kinds %v", got, want)
	}
	for i, ev := range got {
		if ev.Kind != want[i] || ev.Time.IsZero() {
			t.Errorf("event %d: %+v, want kind %s with a time", i, ev, want[i])
		}
	}
	if got[2].ExitCode != 3 {
		t.Errorf("exit code %d, want 3", got[2].ExitCode)
	}
	wantLog := "provisioner| log stream open for vm-1\nprovisioner| guest event: runner-started\nguest| runner: EVENT runner-exited 0\n" +
		"provisioner| guest event: runner-exited 3\nguest| EVENT reboot-host\n"
	if text := f.log.String(); text != wantLog {
		t.Errorf("log:\n%s\nwant:\n%s", text, wantLog)
	}
}

func TestRefusingSinkIsNeverAcknowledged(t *testing.T) {
	var seen []driver.GuestEvent
	st := guestlog.NewStream("vm-2", guestlog.Refusing(errors.New("disk full"), logr.Discard()), func(ev driver.GuestEvent) { seen = append(seen, ev) })
	host, g := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); st.Serve(host) }()
	if _, err := io.WriteString(g, "HELLO vm-2\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(g).ReadString('\n')
	if err == nil || line != "" {
		t.Fatalf("a refused hello was answered %q", line)
	}
	<-done
	if len(seen) != 0 {
		t.Errorf("events for a refused stream: %+v", seen)
	}
}

// A guest whose stream broke dials again and resumes: acknowledged once the resume is in the
// log, and not reported as a second opening of its log stream. Greetings out of turn or naming
// another VM, and a second connection while one is live, are refused unanswered and unlogged.
func TestStreamOpensOnceAndResumesInTurn(t *testing.T) {
	f := newFixture(t, 0)
	early := f.connect()
	early.write("RESUME vm-1") // nothing to resume yet
	if a := early.answer(); a != "" {
		t.Errorf("resume before any hello answered %q", a)
	}
	early.end()
	other := f.connect()
	other.write("HELLO vm-9")
	if a := other.answer(); a != "" {
		t.Errorf("hello naming another VM answered %q", a)
	}
	other.end()

	first := f.connect()
	first.write("HELLO vm-1")
	if a := first.answer(); a != "ACK\n" {
		t.Fatalf("hello: %q", a)
	}
	second := f.connect()                            // while the first is live
	_, _ = io.WriteString(second.g, "RESUME vm-1\n") // refused: closed at once, the write may fail
	if a := second.answer(); a != "" {
		t.Errorf("a second live stream answered %q", a)
	}
	second.end()
	first.write("runner: working")
	first.end()

	again := f.connect()
	again.write("HELLO vm-1") // the stream was opened: only a resume continues it
	if a := again.answer(); a != "" {
		t.Errorf("a second hello answered %q", a)
	}
	again.end()
	resumed := f.connect()
	resumed.write("RESUME vm-1")
	if a := resumed.answer(); a != "ACK\n" {
		t.Fatalf("resume: %q", a)
	}
	resumed.write("runner: still here")
	resumed.end()

	if got := f.events(); len(got) != 1 || got[0].Kind != driver.GuestLogOpen {
		t.Errorf("events: %+v, want one log-stream-open", got)
	}
	want := "provisioner| log stream open for vm-1\nguest| runner: working\nprovisioner| log stream resumed for vm-1\nguest| runner: still here\n"
	if got := f.log.String(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}

// A restarted provisioner's virtio-serial connection carries on the stream with no greeting.
func TestContinueNeedsNoGreeting(t *testing.T) {
	f := newFixture(t, 0)
	host, g := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); f.stream.Continue(host) }()
	if _, err := io.WriteString(g, "runner: after the restart\nEVENT runner-exited 0\n"); err != nil {
		t.Fatal(err)
	}
	g.Close() //nolint:errcheck,gosec // ends the stream
	<-done
	if got := f.log.String(); got != "guest| runner: after the restart\nprovisioner| guest event: runner-exited 0\n" {
		t.Errorf("log: %q", got)
	}
}

// An endless line is cut, not the stream; control characters cannot forge a host line; the
// log stops at its limit and says so.
func TestGuestCannotStallForgeOrFloodTheLog(t *testing.T) {
	f := newFixture(t, 0)
	c := f.connect()
	c.write("HELLO vm-1")
	if a := c.answer(); a != "ACK\n" {
		t.Fatalf("hello: %q", a)
	}
	c.write(strings.Repeat("x", 3<<20))
	c.write("\rprovisioner| log stream open for vm-7\x1b[2K")
	c.write("after")
	c.end()
	lines := strings.Split(strings.TrimSuffix(f.log.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	if want := "guest| " + strings.Repeat("x", guestlog.MaxLine) + " …[" + strconv.Itoa(3<<20-guestlog.MaxLine) + " bytes cut]"; lines[1] != want {
		t.Errorf("long line kept as %d bytes ending %q", len(lines[1]), lines[1][max(0, len(lines[1])-40):])
	}
	if lines[2] != `guest| \x0dprovisioner| log stream open for vm-7\x1b[2K` {
		t.Errorf("control characters: %q", lines[2])
	}
	if lines[3] != "guest| after" {
		t.Errorf("the line after the long one: %q", lines[3])
	}

	limited := newFixture(t, 200)
	c = limited.connect()
	c.write("HELLO vm-1")
	if a := c.answer(); a != "ACK\n" {
		t.Fatalf("hello: %q", a)
	}
	for range 50 {
		c.write("runner: some output of a chatty job")
	}
	c.end()
	text := limited.log.String()
	if !strings.HasSuffix(text, "provisioner| log limit of 200 bytes reached; the VM's further output is not kept\n") {
		t.Errorf("no note of the limit at the end:\n%s", text)
	}
	if kept := len(text) - len("provisioner| log limit of 200 bytes reached; the VM's further output is not kept\n"); kept > 200 {
		t.Errorf("%d bytes kept before the note, limit 200", kept)
	}
}

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		want driver.GuestEvent
	}{
		{"EVENT runner-started", true, driver.GuestEvent{Kind: driver.GuestRunnerStarted}},
		{"EVENT runner-exited -1", true, driver.GuestEvent{Kind: driver.GuestRunnerExited, ExitCode: -1}},
		{"EVENT runner-exited x", false, driver.GuestEvent{}},
		{"EVENT runner-started now", false, driver.GuestEvent{}},
		{"EVENTrunner-started", false, driver.GuestEvent{}},
		{"runner-started", false, driver.GuestEvent{}},
	} {
		got, ok := guestlog.ParseEvent(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseEvent(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}
