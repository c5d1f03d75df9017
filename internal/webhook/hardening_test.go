package webhook_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

// sendFrom sends a delivery from a source address.
func (e *env) sendFrom(t *testing.T, addr string, d delivery) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(d.body)))
	req.RemoteAddr = addr
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

func TestUnverifiedDeliveriesAreRateLimitedPerSource(t *testing.T) {
	now := fixedNow
	var lookups atomic.Int64
	e := newEnv(t, func(o *webhook.Options) {
		o.UnverifiedRate, o.UnverifiedBurst = 0.5, 3
		o.Now = func() time.Time { return now }
		o.Secrets = webhook.SecretSourceFunc(func(context.Context, string) ([]webhook.Secret, error) {
			lookups.Add(1)
			return []webhook.Secret{{Value: []byte(secret)}}, nil
		})
	})
	push := func(n int) []byte {
		return fmt.Appendf(nil, `{"after":"%d","repository":{"full_name":"acme/app"}}`, n)
	}
	bad := func(n int) delivery {
		return delivery{body: push(n), headers: forgejoHeaders("wrong", "d", "push", push(n))}
	}
	good := func(n int) delivery {
		return delivery{body: push(n), headers: forgejoHeaders(secret, fmt.Sprint(n), "push", push(n))}
	}

	const attacker, neighbour = "198.51.100.7:40000", "198.51.100.8:40000"
	for i := range 3 {
		expectStatus(t, e.sendFrom(t, attacker, bad(i)), http.StatusUnauthorized)
	}
	before := lookups.Load()
	rec := e.sendFrom(t, attacker, bad(3))
	expectStatus(t, rec, http.StatusTooManyRequests)
	if got := strings.TrimSpace(rec.Body.String()); got != string(webhook.ResultRateLimited) {
		t.Errorf("body %q, want rate_limited", got)
	}
	if got := rec.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want 2 (one token at 0.5/s)", got)
	}
	// A refused delivery costs no secret lookup; another port of the same host is the same
	// source, and so is a signed delivery from it, which cannot be told apart before the lookup.
	expectStatus(t, e.sendFrom(t, "198.51.100.7:40001", bad(4)), http.StatusTooManyRequests)
	expectStatus(t, e.sendFrom(t, attacker, good(5)), http.StatusTooManyRequests)
	if lookups.Load() != before {
		t.Errorf("refused deliveries looked secrets up %d times", lookups.Load()-before)
	}
	// Another source has its own allowance.
	expectStatus(t, e.sendFrom(t, neighbour, bad(6)), http.StatusUnauthorized)
	// The allowance refills at the rate.
	now = now.Add(2 * time.Second)
	expectStatus(t, e.sendFrom(t, attacker, bad(7)), http.StatusUnauthorized)
	expectStatus(t, e.sendFrom(t, attacker, bad(8)), http.StatusTooManyRequests)
	if e.obs.count(webhook.ResultRateLimited) != 4 {
		t.Errorf("rate_limited counted %d times, want 4", e.obs.count(webhook.ResultRateLimited))
	}

	// Verified deliveries give their token back: a Forgejo is never limited.
	const forgejo = "[2001:db8:1:2::10]:443"
	for i := range 20 {
		expectStatus(t, e.sendFrom(t, forgejo, good(100+i)), http.StatusAccepted)
	}
	// An IPv6 host is charged by its /64: its neighbours in it share the allowance.
	for i := range 3 {
		expectStatus(t, e.sendFrom(t, fmt.Sprintf("[2001:db8:1:2::%x]:1", 0x100+i), bad(200+i)), http.StatusUnauthorized)
	}
	expectStatus(t, e.sendFrom(t, "[2001:db8:1:2:ffff::1]:1", bad(300)), http.StatusTooManyRequests)
	expectStatus(t, e.sendFrom(t, "[2001:db8:1:3::1]:1", bad(301)), http.StatusUnauthorized)
}

func TestNewServerSetsEveryLimit(t *testing.T) {
	s := webhook.NewServer(":0", http.NotFoundHandler(), webhook.ServerLimits{})
	if s.ReadHeaderTimeout != webhook.DefaultReadHeaderTimeout || s.ReadTimeout != webhook.DefaultReadTimeout ||
		s.WriteTimeout != webhook.DefaultWriteTimeout || s.IdleTimeout != webhook.DefaultIdleTimeout ||
		s.MaxHeaderBytes != webhook.DefaultMaxHeaderBytes {
		t.Errorf("server limits %v %v %v %v %d, want the defaults", s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout, s.MaxHeaderBytes)
	}
	for _, d := range []time.Duration{s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout} {
		if d <= 0 {
			t.Errorf("a timeout is unset: %+v", s)
		}
	}
	s = webhook.NewServer(":0", http.NotFoundHandler(), webhook.ServerLimits{ReadTimeout: time.Second, MaxHeaderBytes: 10})
	if s.ReadTimeout != time.Second || s.MaxHeaderBytes != 10 || s.WriteTimeout != webhook.DefaultWriteTimeout {
		t.Errorf("overrides not taken: %+v", s)
	}
}

// serve runs the handler behind NewServer on a local port.
func serve(t *testing.T, h http.Handler, limits webhook.ServerLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := webhook.NewServer("", h, limits)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// A body sent a byte at a time cannot hold a connection past the read timeout. The trickle would
// last a minute; the test only waits for the server to end the exchange first.
func TestTrickledBodyIsCut(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) { o.Now = nil })
	addr := serve(t, e.h, webhook.ServerLimits{ReadTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := io.WriteString(conn, "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Forgejo-Signature: 00\r\nContent-Length: 600\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(conn).ReadByte()
		close(ended)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 600 {
		select {
		case <-ended: // the server answered or closed: either way it did not wait for the body
			return
		case <-tick.C:
			if _, err := conn.Write([]byte{' '}); err != nil {
				return // the server closed the connection
			}
		}
	}
	t.Fatal("a trickled body held the connection for a minute")
}

func TestOversizedHeadersAreRefused(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) { o.Now = nil })
	addr := serve(t, e.h, webhook.ServerLimits{})
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/webhook", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("x", 2*webhook.DefaultMaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
}

func TestTrimSecret(t *testing.T) {
	for in, want := range map[string]string{
		"s3cret": "s3cret", "s3cret\n": "s3cret", "s3cret\r\n": "s3cret", "s3cret\n\n": "s3cret\n",
		"s3cret \n": "s3cret ", "s3cret\r": "s3cret\r", "\n": "", "": "",
	} {
		got, trimmed := webhook.TrimSecret([]byte(in))
		if string(got) != want || trimmed != (in != want) {
			t.Errorf("TrimSecret(%q) = %q, %v; want %q", in, got, trimmed, want)
		}
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{})

	got, err := webhook.ReadSecretFile(write("echoed", "from-echo\n"), log)
	if err != nil || string(got) != "from-echo" {
		t.Fatalf("echoed secret: %q, %v; want from-echo", got, err)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "trimmed") || !strings.Contains(lines[0], "echoed") || strings.Contains(lines[0], "from-echo") {
		t.Errorf("log %q, want one line naming the file, saying it trimmed, without the secret", lines)
	}
	lines = nil
	if got, err := webhook.ReadSecretFile(write("exact", "exact-secret"), log); err != nil || string(got) != "exact-secret" || len(lines) != 0 {
		t.Errorf("exact secret: %q, %v, log %q", got, err, lines)
	}
	for _, content := range []string{"", "\n", "\r\n"} {
		if _, err := webhook.ReadSecretFile(write("empty", content), log); err == nil {
			t.Errorf("secret file %q accepted", content)
		}
	}
	if _, err := webhook.ReadSecretFile(filepath.Join(dir, "missing"), log); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist wrapped", err)
	}
}

// A signed delivery whose body was captured once cannot act again, however many other
// deliveries come in between.
func TestReplayOutlivesAFloodOfDistinctBodies(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) {
		o.DedupeSize = 100
		o.Secrets = webhook.StaticSecrets{[]byte(secret), []byte("flooder-secret")}
	})
	victim := []byte(forgejo15Deliveries["push"])
	expectStatus(t, e.send(t, delivery{body: victim, headers: forgejoHeaders(secret, "v", "push", victim)}), http.StatusAccepted)
	for i := range 1000 {
		b := fmt.Appendf(nil, `{"after":"%d","repository":{"full_name":"acme/app"}}`, i)
		expectStatus(t, e.send(t, delivery{body: b, headers: forgejoHeaders("flooder-secret", fmt.Sprint(i), "push", b)}), http.StatusAccepted)
	}
	expectStatus(t, e.send(t, delivery{body: victim, headers: forgejoHeaders(secret, "fresh", "push", victim)}), http.StatusOK)
}
