// Package guestchan hands a VM's guest its configuration, runner token included, once, over a
// listener only that guest can reach (for Firecracker: the host end of the VM's vsock, a Unix
// socket only the hypervisor's user may connect to). Nothing is written to disk; after the first
// connection the listener is closed and the payload dropped, so the token is on the host only
// until the guest has taken it.
//
// The payload is written as soon as the connection is accepted: over vsock a connection exists
// only once the guest made it. The guest's request line (guest.TokenRequest, which it sends on
// every transport) is read after the payload only so that the connection is closed with nothing
// left unread: a Unix socket closed with unread data resets its peer, which Firecracker would log
// as a failed read and turn into a reset of the guest's connection.
package guestchan

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// drainWait bounds the wait for the guest's request line once the payload was written.
const drainWait = time.Second

// Channel serves one payload to the first connection.
type Channel struct {
	ln   net.Listener
	once sync.Once
	done chan struct{}
	err  error
}

// Serve starts serving payload on ln; onRead (optional) is called after the payload was written
// in full. The caller must not keep payload: Serve clears it when done.
func Serve(ln net.Listener, payload []byte, onRead func()) *Channel {
	c := &Channel{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer clear(payload)
		conn, err := ln.Accept()
		c.Close() //nolint:errcheck,gosec // one connection only: nobody else may read it
		if err != nil {
			c.err = err
			return
		}
		defer conn.Close() //nolint:errcheck // written in full or failed; nothing more to say
		if _, err := conn.Write(payload); err != nil {
			c.err = err
			return
		}
		if onRead != nil {
			onRead()
		}
		drain(conn)
	}()
	return c
}

// drain says the payload is complete (the reader sees its end without waiting for the close)
// and reads what the guest sent, until it closes or drainWait passed.
func drain(conn net.Conn) {
	if hc, ok := conn.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite() //nolint:errcheck,gosec // the close below ends it anyway
	}
	conn.SetReadDeadline(time.Now().Add(drainWait))  //nolint:errcheck,gosec // without one, the close comes after the guest's
	io.Copy(io.Discard, io.LimitReader(conn, 4<<10)) //nolint:errcheck,gosec // the request, or nothing
}

// Close stops serving; a payload not yet read is dropped.
func (c *Channel) Close() error {
	var err error
	c.once.Do(func() {
		err = c.ln.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}

// Wait waits until the exchange is over (the payload written and the guest's request read, or
// the channel closed), and returns why it ended (nil when the payload was written in full).
func (c *Channel) Wait() error {
	<-c.done
	return c.err
}
