package webhook

import (
	"net/http"
	"time"
)

// Limits of the receiver's HTTP server. Forgejo v15.0.3 sends a delivery as one short request
// and gives up on it after [webhook] DELIVER_TIMEOUT, 5 seconds by default
// (services/webhook/deliver.go sets it as the client's Timeout), so a sender that needs more
// than a few seconds for its headers or body is not Forgejo: it is holding a connection.
// The limits leave room for an administrator who raised DELIVER_TIMEOUT and for a slow proxy.
const (
	// DefaultReadHeaderTimeout bounds the request line and headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds the whole request, body included: a body trickled a byte at a
	// time cannot hold a connection longer than this.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds the handler and its answer; the handler only records or
	// enqueues, so this is generous.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout bounds a kept-alive connection between two deliveries.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes bounds the headers. Forgejo sends about twenty short ones (ids,
	// event names, signatures, an optional Authorization).
	DefaultMaxHeaderBytes = 64 << 10
)

// ServerLimits tune NewServer; a zero field takes its default.
type ServerLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// NewServer builds the HTTP server the receiver is served by: every timeout set, so that no
// sender, verified or not, can hold a connection or a goroutine for long.
func NewServer(addr string, handler http.Handler, limits ServerLimits) *http.Server {
	orDefault := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	maxHeader := limits.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: orDefault(limits.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(limits.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(limits.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(limits.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    maxHeader,
	}
}
