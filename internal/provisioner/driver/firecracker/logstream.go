package firecracker

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestchan"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guestlog"
)

// vm is what the driver holds in memory for a VM it made or adopted: the host ends of the
// guest's vsock ports, the VM's log sink and the tail of its console. None of it is needed for
// the VM to run: a provisioner that exits drops it all (Close) and the next one makes it again
// (Reattach).
type vm struct {
	sink *guestlog.Sink
	tail *consoleTail
	stop chan struct{}
	wg   sync.WaitGroup // the log listener's accept loop, its relays, the console tail

	mu      sync.Mutex
	closing bool
	config  *guestchan.Channel // nil once adopted
	logLn   *net.UnixListener
	conns   map[net.Conn]struct{}
}

// errAttached: the driver already holds the VM.
var errAttached = errors.New("VM already attached")

// attach opens the VM's log sink, starts copying its console into it and listens for the
// guest's log stream. It is what Create and Reattach share.
func (d *Driver) attach(id string, onEvent func(driver.GuestEvent), adopted bool) (*vm, error) {
	v := &vm{stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	d.mu.Lock()
	if d.vms[id] != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", id, errAttached)
	}
	d.vms[id] = v // before the socket exists: a concurrent attach must not replace it
	d.mu.Unlock()

	log := d.cfg.Logger.WithValues("vm", id)
	state := d.stateDir(id)
	if w, err := d.cfg.OpenSink(id, filepath.Join(state, logName)); err != nil {
		// The VM runs without a sink: its guest gets no acknowledgement and starts no runner.
		log.Error(err, "opening the VM's log sink")
		v.sink = guestlog.Refusing(err, log)
	} else {
		v.sink = guestlog.NewSink(w, log, d.cfg.LogLimit)
	}
	stream := guestlog.NewStream(id, v.sink, onEvent)
	if adopted {
		stream.Adopted() // its guest resumes the stream the last run acknowledged
	}
	v.tail = newConsoleTail(filepath.Join(d.Dir(id), consoleName), filepath.Join(state, consoleOffsetName), v.sink, log)
	// What the console held while no provisioner ran goes first.
	v.tail.catchUp() //nolint:errcheck,gosec // the tail goes on trying

	ln, err := d.listenGuest(id, GuestLogPort)
	if err != nil {
		d.mu.Lock()
		delete(d.vms, id)
		d.mu.Unlock()
		v.close()
		return nil, err
	}
	// The socket file is the driver's to remove (Destroy removes the directory): a listener of
	// an earlier Driver closed late must not take away the socket of the one serving now.
	ln.SetUnlinkOnClose(false)
	v.mu.Lock()
	v.logLn = ln
	v.mu.Unlock()
	v.wg.Add(2)
	go func() {
		defer v.wg.Done()
		v.tail.follow(v.stop, d.cfg.ConsolePoll)
	}()
	go func() {
		defer v.wg.Done()
		v.serveLog(ln, stream, log)
	}()
	return v, nil
}

func (v *vm) setConfig(ch *guestchan.Channel) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.config = ch
}

// serveLog relays each connection of the guest's log stream: one at a time (the stream closes
// another while one is live), a new one after the guest's last broke.
func (v *vm) serveLog(ln *net.UnixListener, stream *guestlog.Stream, log logr.Logger) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Error(err, "accepting the guest's log stream")
			select {
			case <-v.stop:
				return
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		v.mu.Lock()
		if v.closing {
			v.mu.Unlock()
			conn.Close() //nolint:errcheck,gosec // closing
			return
		}
		v.conns[conn] = struct{}{}
		v.wg.Add(1)
		v.mu.Unlock()
		go func() {
			defer v.wg.Done()
			stream.Serve(consoleFirst{Conn: conn, tail: v.tail})
			v.mu.Lock()
			delete(v.conns, conn)
			v.mu.Unlock()
		}()
	}
}

// close ends everything the driver holds of the VM and waits until it has ended: the
// configuration channel (an unread payload is dropped), the log listener and its connections,
// the console tail; then the sink is closed. Idempotent.
func (v *vm) close() {
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return
	}
	v.closing = true
	config, ln := v.config, v.logLn
	conns := make([]net.Conn, 0, len(v.conns))
	for c := range v.conns {
		conns = append(conns, c)
	}
	v.mu.Unlock()
	if config != nil {
		config.Close() //nolint:errcheck,gosec // dropping the payload is the point
		config.Wait()  //nolint:errcheck,gosec // only waiting for its end
	}
	if ln != nil {
		ln.Close() //nolint:errcheck,gosec // ending it is the point
	}
	close(v.stop)
	for _, c := range conns {
		c.Close() //nolint:errcheck,gosec // ending them is the point
	}
	v.wg.Wait()
	if v.tail != nil {
		v.tail.halt()
	}
	if v.sink != nil {
		v.sink.Close() //nolint:errcheck,gosec // nothing writes to it any more
	}
}

// consoleFirst is a guest log connection whose every read first brings the console's lines
// into the log: a console line written before a guest line was read is logged before it, so
// the two sources keep their order in the VM's log (to within a read).
type consoleFirst struct {
	net.Conn
	tail *consoleTail
}

func (c consoleFirst) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.tail.catchUp() //nolint:errcheck,gosec // the tail goes on trying
	}
	return n, err
}
