package webhook

import (
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// The allowance of deliveries that fail before or at signature verification, per source
// address. Such a delivery costs the receiver a body read, a secret lookup and an HMAC of the
// body under every candidate secret, and the sender nothing. A genuine Forgejo is never charged:
// its deliveries verify, and a verified delivery gets its token back. A hook with a wrong
// secret fails every delivery anyway, and sends only as many as its repository has events.
const (
	// DefaultUnverifiedRate is the long-run rate, per second.
	DefaultUnverifiedRate = 0.5
	// DefaultUnverifiedBurst is how many may come at once after a quiet spell.
	DefaultUnverifiedBurst = 30
)

// maxSources bounds the sources the limiter remembers; beyond it, new sources share one
// allowance until the remembered ones have refilled and are forgotten.
const maxSources = 10000

// overflowSource is the shared allowance of the sources beyond maxSources.
const overflowSource = "overflow"

// sourceKey names the sender a delivery is charged to: the connection's remote address, which is
// the address of the last proxy when the receiver sits behind one (an Ingress, a load balancer).
// Forwarded headers are not read: anyone can write them. An IPv6 sender is charged by its /64,
// the smallest block a single host is usually given, so that one host cannot take a fresh
// allowance from each of its addresses.
func sourceKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	prefix, err := addr.Prefix(64)
	if err != nil {
		return addr.String()
	}
	return prefix.String()
}

// limiter is a token bucket per source.
type limiter struct {
	mu        sync.Mutex
	rate      float64
	burst     float64
	max       int
	buckets   map[string]*bucket
	lastPrune time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rate float64, burst, maxSources int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: maxSources, buckets: map[string]*bucket{}}
}

// take spends one of the source's tokens, if it has one. It returns the key the source was
// charged under, to give the token back with.
func (l *limiter) take(source string, now time.Time) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[source]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.pruneLocked(now)
		}
		if len(l.buckets) >= l.max {
			source = overflowSource
			b = l.buckets[source]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, at: now}
			l.buckets[source] = b
		}
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return source, false
	}
	b.tokens--
	return source, true
}

// giveBack returns the token a verified delivery took.
func (l *limiter) giveBack(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[key]; b != nil {
		l.refill(b, now)
		b.tokens = min(l.burst, b.tokens+1)
	}
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.at = now
	}
}

// pruneLocked forgets the sources whose allowance is full again: forgetting them changes
// nothing. It scans at most once a second, so that a stream of new sources at the bound costs
// one scan a second, not one per delivery.
func (l *limiter) pruneLocked(now time.Time) {
	if now.Sub(l.lastPrune) < time.Second {
		return
	}
	l.lastPrune = now
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// retryAfter is the Retry-After of a refused delivery: the seconds until a token is back.
func (l *limiter) retryAfter() string {
	return strconv.Itoa(int(math.Ceil(1 / l.rate)))
}

// sources returns how many sources are remembered, for tests.
func (l *limiter) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
