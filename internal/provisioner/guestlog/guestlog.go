// Package guestlog is the host side of a VM's log stream, whatever carries it (a QEMU
// virtio-serial port, a Firecracker vsock port): the guest's hello is written to the VM's log
// and acknowledged only if that write worked, so the guest never starts a runner whose output is
// not kept ("logs before work", docs/provisioner.md); the guest's milestones are reported as
// driver.GuestEvents; everything else goes to the log, line by line, next to the serial console.
//
// The guest is not trusted (its job runs as root in it): lines are cut at MaxLine and their
// control characters escaped, so a guest cannot forge a provisioner's line or stall the relay
// with an endless one; a VM's log stops growing at its sink's limit; a VM has one live stream,
// opened by a hello naming the VM, and only resumed after that.
package guestlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// MaxLine is the longest line kept whole; the rest of a longer one is dropped and the cut noted.
const MaxLine = 64 << 10

// Sink writes whole lines to a VM's log, one writer at a time, up to a limit.
type Sink struct {
	mu      sync.Mutex
	w       io.WriteCloser
	log     logr.Logger
	limit   int64
	written int64
	full    bool
	failed  bool
}

// NewSink writes to w, at most limit bytes (0: no limit); a failing write is logged once.
func NewSink(w io.WriteCloser, log logr.Logger, limit int64) *Sink {
	return &Sink{w: w, log: log, limit: limit}
}

// Refusing is a sink that takes nothing: what a VM gets when its log could not be opened. Its
// guest is never acknowledged, so it starts no runner.
func Refusing(err error, log logr.Logger) *Sink { return NewSink(refusing{err}, log, 0) }

type refusing struct{ err error }

func (r refusing) Write([]byte) (int, error) { return 0, r.err }
func (r refusing) Close() error              { return nil }

// Line writes text and a newline. Past the limit, one last line says so and every later line is
// dropped without an error: the log is kept as far as the host allows, and the guest goes on.
func (s *Sink) Line(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return nil
	}
	line := text + "\n"
	if s.limit > 0 && s.written+int64(len(line)) > s.limit {
		s.full = true
		line = fmt.Sprintf("%slog limit of %d bytes reached; the VM's further output is not kept\n", ProvisionerPrefix, s.limit)
		s.log.Info("VM log limit reached; dropping its further output", "limitBytes", s.limit)
	}
	n, err := io.WriteString(s.w, line)
	s.written += int64(n)
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

// Clean makes a guest's line safe to write among the host's: control characters (a carriage
// return that would overwrite the prefix on a terminal, escape sequences) and invalid UTF-8 are
// escaped.
func Clean(text string) string {
	text = strings.TrimRight(text, "\r")
	clean := true
	for i := 0; i < len(text); i++ {
		if c := text[i]; (c < 0x20 && c != '\t') || c == 0x7f || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r < 0x20 && r != '\t', r == 0x7f, r >= 0x80 && r < 0xa0:
			for _, c := range []byte(text[i : i+size]) {
				fmt.Fprintf(&b, `\x%02x`, c)
			}
		default:
			b.WriteString(text[i : i+size])
		}
		i += size
	}
	return b.String()
}

// eachLine calls fn with each line of r, cleaned, until r ends; a line longer than MaxLine is
// cut and the cut noted, so no line can stop the relay.
func eachLine(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, MaxLine)
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			head := Clean(string(frag))
			cut := 0
			for errors.Is(err, bufio.ErrBufferFull) {
				frag, err = br.ReadSlice('\n')
				cut += len(frag)
			}
			if err == nil {
				cut-- // the newline
			}
			fn(head + " …[" + strconv.Itoa(cut) + " bytes cut]")
		case err == nil:
			fn(Clean(strings.TrimSuffix(string(frag), "\n")))
		case len(frag) > 0:
			fn(Clean(string(frag))) // the last line, unterminated
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// RelayConsole writes the serial console to the sink, line by line, until conn ends.
func RelayConsole(conn io.ReadCloser, s *Sink) {
	defer conn.Close() // ends with the VM
	eachLine(conn, func(text string) {
		s.Line(ConsolePrefix + text) //nolint:errcheck,gosec // logged by the sink
	})
}

// Stream is the host side of one VM's log stream, across the connections the guest makes: one
// is served at a time; the first must open with a hello naming the VM, a later one (after the
// last broke) must resume naming it.
type Stream struct {
	vmID    string
	sink    *Sink
	onEvent func(driver.GuestEvent)

	mu     sync.Mutex
	opened bool
	live   bool
}

// NewStream returns the stream of VM vmID, written to sink; onEvent (may be nil) is told of the
// guest's milestones.
func NewStream(vmID string, sink *Sink, onEvent func(driver.GuestEvent)) *Stream {
	return &Stream{vmID: vmID, sink: sink, onEvent: onEvent}
}

// Adopted marks the stream of a VM a restarted provisioner takes over, which was opened before:
// its guest's next connection resumes it.
func (st *Stream) Adopted() {
	st.mu.Lock()
	st.opened = true
	st.mu.Unlock()
}

// Serve relays one connection until it ends. While another connection is served it is closed
// at once. Its first line must be "HELLO <vm id>" (or, once the stream was opened, "RESUME <vm
// id>"): a line for it is written to the sink and the acknowledgement sent only if that write
// worked; anything else closes it unacknowledged. Event lines become calls of onEvent and are
// written to the log too; any other line is written with GuestPrefix.
func (st *Stream) Serve(conn io.ReadWriteCloser) { st.serve(conn, true) }

// Continue relays a connection that carries on a stream opened before, with no greeting: a
// virtio-serial port a restarted provisioner connects to again, whose guest never noticed the
// gap (its writes waited).
func (st *Stream) Continue(conn io.ReadWriteCloser) {
	st.Adopted()
	st.serve(conn, false)
}

func (st *Stream) serve(conn io.ReadWriteCloser, greeting bool) {
	defer conn.Close() // ends with the VM, or refused
	st.mu.Lock()
	if st.live {
		st.mu.Unlock()
		st.sink.log.Info("refusing a second log stream while one is live")
		return
	}
	st.live = true
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.live = false
		st.mu.Unlock()
	}()

	first := greeting
	refused := false
	eachLine(&stopReader{r: conn, stop: &refused}, func(text string) {
		if refused {
			return // what was read ahead of the refusal
		}
		if first {
			first = false
			if !st.greet(conn, text) {
				refused = true
			}
			return
		}
		if ev, ok := ParseEvent(text); ok {
			st.sink.Line(ProvisionerPrefix + "guest event: " + strings.TrimPrefix(text, guest.LogEvent+" ")) //nolint:errcheck,gosec // logged by the sink
			emit(st.onEvent, ev)
			return
		}
		st.sink.Line(GuestPrefix + text) //nolint:errcheck,gosec // logged by the sink
	})
}

// greet answers a connection's first line; false refuses the connection.
func (st *Stream) greet(conn io.Writer, text string) bool {
	verb, id, _ := strings.Cut(text, " ")
	st.mu.Lock()
	opened := st.opened
	st.mu.Unlock()
	var note string
	switch {
	case id != st.vmID:
		st.sink.log.Info("refusing a log stream that names another VM", "verb", Clean(verb))
		return false
	case verb == guest.LogHello && !opened:
		note = "log stream open for " + id
	case verb == guest.LogResume && opened:
		note = "log stream resumed for " + id
	default:
		st.sink.log.Info("refusing a log stream that neither opens nor resumes it in turn", "verb", Clean(verb), "opened", opened)
		return false
	}
	if err := st.sink.Line(ProvisionerPrefix + note); err != nil {
		st.sink.log.Error(err, "log sink refused the guest's log stream; not acknowledging, the runner will not start or go on")
		return false
	}
	if _, err := io.WriteString(conn, guest.LogAck+"\n"); err != nil {
		st.sink.log.Error(err, "acknowledging the guest's log stream")
		return false
	}
	if !opened {
		st.mu.Lock()
		st.opened = true
		st.mu.Unlock()
		emit(st.onEvent, driver.GuestEvent{Kind: driver.GuestLogOpen})
	}
	return true
}

// stopReader ends reading once *stop is set (a refused connection is read no further).
type stopReader struct {
	r    io.Reader
	stop *bool
}

func (s *stopReader) Read(p []byte) (int, error) {
	if *s.stop {
		return 0, io.EOF
	}
	return s.r.Read(p)
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
