package guestlog_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
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

// relay runs RelayGuest on one end of a pipe and returns the guest's end and the events seen.
func relay(t *testing.T, s *guestlog.Sink) (guestEnd net.Conn, events func() []driver.GuestEvent, done chan struct{}) {
	t.Helper()
	host, g := net.Pipe()
	var mu sync.Mutex
	var seen []driver.GuestEvent
	done = make(chan struct{})
	go func() {
		defer close(done)
		guestlog.RelayGuest(host, s, func(ev driver.GuestEvent) { mu.Lock(); seen = append(seen, ev); mu.Unlock() })
	}()
	t.Cleanup(func() { g.Close() }) //nolint:errcheck,gosec // may be closed already
	return g, func() []driver.GuestEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]driver.GuestEvent(nil), seen...)
	}, done
}

func TestHelloIsAcknowledgedOnlyOnceWritten(t *testing.T) {
	var log buffer
	g, events, done := relay(t, guestlog.NewSink(&log, logr.Discard()))
	r := bufio.NewReader(g)
	write := func(s string) {
		if _, err := io.WriteString(g, s+"\n"); err != nil {
			t.Fatalf("guest write: %v", err)
		}
	}
	write("HELLO vm-1")
	ack, err := r.ReadString('\n')
	if err != nil || ack != "ACK\n" {
		t.Fatalf("answer to hello: %q, %v", ack, err)
	}
	write("EVENT runner-started")
	write("runner: EVENT runner-exited 0") // the runner's own output: not an event
	write("EVENT runner-exited 3")
	write("EVENT reboot-host") // unknown: kept as a line
	g.Close()                  //nolint:errcheck,gosec // ends the stream
	<-done

	got := events()
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
	text := log.String()
	for _, line := range []string{
		"provisioner| log stream open for vm-1\n",
		"provisioner| guest event: runner-started\n",
		"guest| runner: EVENT runner-exited 0\n",
		"provisioner| guest event: runner-exited 3\n",
		"guest| EVENT reboot-host\n",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("log lacks %q:\n%s", line, text)
		}
	}
}

func TestRefusingSinkIsNeverAcknowledged(t *testing.T) {
	g, events, done := relay(t, guestlog.Refusing(errors.New("disk full"), logr.Discard()))
	if _, err := io.WriteString(g, "HELLO vm-2\n"); err != nil {
		t.Fatal(err)
	}
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(g).ReadString('\n')
		answered <- line
	}()
	select {
	case line := <-answered:
		t.Fatalf("a refused hello was answered %q", line)
	case <-time.After(300 * time.Millisecond):
	}
	g.Close() //nolint:errcheck,gosec // ends the stream
	<-done
	if ev := events(); len(ev) != 0 {
		t.Errorf("events for a refused stream: %+v", ev)
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

// A guest whose stream broke dials again and resumes: acknowledged once the resume is in the
// log, and not reported as a second opening of its log stream.
func TestResumeIsAcknowledgedWithoutASecondOpening(t *testing.T) {
	var log buffer
	g, events, done := relay(t, guestlog.NewSink(&log, logr.Discard()))
	if _, err := io.WriteString(g, "RESUME vm-3\n"); err != nil {
		t.Fatal(err)
	}
	if ack, err := bufio.NewReader(g).ReadString('\n'); err != nil || ack != "ACK\n" {
		t.Fatalf("answer to resume: %q, %v", ack, err)
	}
	if _, err := io.WriteString(g, "runner: still here\nEVENT runner-exited 0\n"); err != nil {
		t.Fatal(err)
	}
	g.Close() //nolint:errcheck,gosec // ends the stream
	<-done
	if got := events(); len(got) != 1 || got[0].Kind != driver.GuestRunnerExited {
		t.Errorf("events after a resume: %+v, want only the runner's exit", got)
	}
	want := "provisioner| log stream resumed for vm-3\nguest| runner: still here\nprovisioner| guest event: runner-exited 0\n"
	if got := log.String(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}
