// Package guestlog is the host side of a VM's log stream, whatever carries it (a QEMU
// virtio-serial port, a Firecracker vsock port): the guest's hello is written to the VM's log
// and acknowledged only if that write worked, so the guest never starts a runner whose output is
// not kept ("logs before work", docs/provisioner.md); the guest's milestones are reported as
// driver.GuestEvents; everything else goes to the log, line by line, next to the serial console.
package guestlog

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
)

// Prefixes of the lines in a VM's log, by source.
const (
	ConsolePrefix     = "console| "
	ProvisionerPrefix = "provisioner| "
	GuestPrefix       = "guest| "
)

// maxLine bounds a line; a longer one is cut rather than ending the stream.
const maxLine = 1 << 20

// Sink writes whole lines to a VM's log, one writer at a time.
type Sink struct {
	mu     sync.Mutex
	w      io.WriteCloser
	log    logr.Logger
	failed bool
}

// NewSink writes to w; a failing write is logged once to log.
func NewSink(w io.WriteCloser, log logr.Logger) *Sink { return &Sink{w: w, log: log} }

// Refusing is a sink that takes nothing: what a VM gets when its log could not be opened. Its
// guest is never acknowledged, so it starts no runner.
func Refusing(err error, log logr.Logger) *Sink { return NewSink(refusing{err}, log) }

type refusing struct{ err error }

func (r refusing) Write([]byte) (int, error) { return 0, r.err }
func (r refusing) Close() error              { return nil }

// Line writes text and a newline.
func (s *Sink) Line(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := io.WriteString(s.w, text+"\n")
	if err != nil {
		if !s.failed {
			s.failed = true // logged once, not once per line
			s.log.Error(err, "writing the VM's log")
		}
		return fmt.Errorf("write VM log: %w", err)
	}
	return nil
}

// Close closes the underlying writer.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Close()
}

func scanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	return sc
}

// RelayConsole writes the serial console to the sink, line by line, until conn ends.
func RelayConsole(conn io.ReadCloser, s *Sink) {
	defer conn.Close() // ends with the VM
	sc := scanner(conn)
	for sc.Scan() {
		s.Line(ConsolePrefix + strings.TrimRight(sc.Text(), "\r")) //nolint:errcheck,gosec // logged by the sink
	}
}

// RelayGuest reads the guest's log stream until conn ends. Its first line is the hello, or
// "RESUME <vm id>" when a guest whose stream broke (a vsock connection whose host end closed:
// the provisioner restarted) dialled again: a line for it is written to the sink and the
// acknowledgement sent only if that write worked; a resumed stream is not reported open a
// second time. Event lines become calls of onEvent (which may be nil) and are written to the log
// too; any other line is written with GuestPrefix.
func RelayGuest(conn io.ReadWriteCloser, s *Sink, onEvent func(driver.GuestEvent)) {
	defer conn.Close() // ends with the VM
	sc := scanner(conn)
	first := true
	for sc.Scan() {
		text := strings.TrimRight(sc.Text(), "\r")
		if first {
			first = false
			hello, isHello := strings.CutPrefix(text, guest.LogHello+" ")
			resumed, isResume := strings.CutPrefix(text, guest.LogResume+" ")
			if isHello || isResume {
				note := "log stream open for " + hello
				if isResume {
					note = "log stream resumed for " + resumed
				}
				if err := s.Line(ProvisionerPrefix + note); err != nil {
					s.log.Error(err, "log sink refused the guest's log stream; not acknowledging, the runner will not start or go on")
					continue
				}
				if _, err := io.WriteString(conn, guest.LogAck+"\n"); err != nil {
					s.log.Error(err, "acknowledging the guest's log stream")
					continue
				}
				if isHello {
					emit(onEvent, driver.GuestEvent{Kind: driver.GuestLogOpen})
				}
				continue
			}
		}
		if ev, ok := ParseEvent(text); ok {
			s.Line(ProvisionerPrefix + "guest event: " + strings.TrimPrefix(text, guest.LogEvent+" ")) //nolint:errcheck,gosec // logged by the sink
			emit(onEvent, ev)
			continue
		}
		s.Line(GuestPrefix + text) //nolint:errcheck,gosec // logged by the sink
	}
}

func emit(onEvent func(driver.GuestEvent), ev driver.GuestEvent) {
	if onEvent == nil {
		return
	}
	ev.Time = time.Now()
	onEvent(ev)
}

// ParseEvent reads an event line ("EVENT runner-started", "EVENT runner-exited 0"). The guest
// is not trusted: an event is only ever a figure about its own VM, and an unknown one is a line.
func ParseEvent(text string) (driver.GuestEvent, bool) {
	rest, ok := strings.CutPrefix(text, guest.LogEvent+" ")
	if !ok {
		return driver.GuestEvent{}, false
	}
	fields := strings.Fields(rest)
	switch {
	case len(fields) == 1 && fields[0] == guest.EventRunnerStarted:
		return driver.GuestEvent{Kind: driver.GuestRunnerStarted}, true
	case len(fields) == 2 && fields[0] == guest.EventRunnerExited:
		code, err := strconv.Atoi(fields[1])
		if err != nil {
			return driver.GuestEvent{}, false
		}
		return driver.GuestEvent{Kind: driver.GuestRunnerExited, ExitCode: code}, true
	}
	return driver.GuestEvent{}, false
}
