// Package guestchan hands a VM's guest its configuration, runner token included, once, over a
// listener only that guest can reach (for Firecracker: the host end of the VM's vsock, a Unix
// socket only the hypervisor's user may connect to). Nothing is written to disk; after the first
// connection the listener is closed and the payload dropped, so the token is on the host only
// until the guest has taken it.
package guestchan

import (
	"errors"
	"net"
	"sync"
)

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
	}()
	return c
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

// Wait waits until the payload was read or the channel closed, and returns why it ended (nil
// when the guest read it).
func (c *Channel) Wait() error {
	<-c.done
	return c.err
}
