package forgejo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// Response body limits: a runner page is at most 50 runners, an error a short message.
const (
	maxBodyBytes      = 8 << 20
	maxErrorBodyBytes = 64 << 10
)

// Config builds a Client.
type Config struct {
	// BaseURL is the instance root, e.g. "https://forgejo.example.com" (a sub-path is kept).
	BaseURL string
	// Token is an API token with the scope's write permission. It is sent only to BaseURL's host.
	Token string
	// Scope selects the runner API prefix.
	Scope Scope
	// HTTPClient sends the requests; nil means a client with no timeout of its own (calls are
	// bounded by their context, see Timeout).
	HTTPClient *http.Client
	// Timeout is the deadline of a call whose context has none; zero means DefaultTimeout.
	Timeout time.Duration
	// Observer is told about every request; nil means none.
	Observer Observer
	// UserAgent is sent with every request; empty means "forgejo-runner-operator".
	UserAgent string
	// Now is the clock for Retry-After dates; nil means time.Now.
	Now func() time.Time
}

// Client calls one Forgejo instance's runner API in one scope. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	scope     Scope
	http      *http.Client
	timeout   time.Duration
	observer  Observer
	userAgent string
	now       func() time.Time

	// runnerTokens are the runner tokens this client has handed out, kept (bounded) only to be
	// masked should a server ever echo one.
	mu           sync.Mutex
	runnerTokens []string
}

const maxRememberedTokens = 64

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.BaseURL))
	if err != nil {
		return nil, fmt.Errorf("forgejo client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("forgejo client: base URL %q: want http(s)://host[/path]", redact(cfg.BaseURL, cfg.Token))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("forgejo client: base URL must not carry credentials, a query or a fragment")
	}
	if cfg.Token == "" {
		return nil, errors.New("forgejo client: API token is empty")
	}
	if strings.ContainsAny(cfg.Token, "\r\n\t ") {
		// Most often a Secret written with a trailing newline; Forgejo would answer 401.
		return nil, errors.New("forgejo client: API token contains whitespace (a trailing newline in the Secret?)")
	}
	if err := cfg.Scope.Validate(); err != nil {
		return nil, fmt.Errorf("forgejo client: %w", err)
	}
	c := &Client{
		base: u, token: cfg.Token, scope: cfg.Scope, http: cfg.HTTPClient, timeout: cfg.Timeout,
		observer: cfg.Observer, userAgent: cfg.UserAgent, now: cfg.Now,
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.userAgent == "" {
		c.userAgent = "forgejo-runner-operator"
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Scope returns the client's scope.
func (c *Client) Scope() Scope { return c.scope }

// String describes the client without its token, for whoever prints one.
func (c *Client) String() string { return fmt.Sprintf("forgejo.Client{%s, %s}", c.base, c.scope) }

// GoString is String, so that %#v does not dump the token either.
func (c *Client) GoString() string { return c.String() }

func (c *Client) rememberRunnerToken(t string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.runnerTokens) == maxRememberedTokens {
		c.runnerTokens = c.runnerTokens[1:]
	}
	c.runnerTokens = append(c.runnerTokens, t)
}

func (c *Client) redact(s string) string {
	c.mu.Lock()
	secrets := append([]string{c.token}, c.runnerTokens...)
	c.mu.Unlock()
	return redact(s, secrets...)
}

// withDeadline applies the default deadline to a context without one.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// request is one REST call.
type request struct {
	method   string
	endpoint string // metrics and error name, e.g. "GET /runners/{id}"
	path     string // absolute API path, escaped
	query    url.Values
	body     any
	runnerID int64
}

// response is a 2xx answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends r. callerCtx is the caller's context before the default deadline was added, to tell
// "the caller gave up" from "the call timed out".
func (c *Client) do(callerCtx, ctx context.Context, r request) (*response, error) {
	u := *c.base
	raw := strings.TrimRight(c.base.EscapedPath(), "/") + r.path
	p, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("forgejo %s: bad path: %w", r.endpoint, err)
	}
	u.Path, u.RawPath = p, raw
	u.RawQuery = r.query.Encode()

	var body io.Reader
	if r.body != nil {
		data, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("forgejo %s: encode body: %w", r.endpoint, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("forgejo %s: build request: %s", r.endpoint, c.redact(err.Error()))
	}
	req.Header.Set("Authorization", "token "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observe(r.endpoint, "error", time.Since(start))
		return nil, &TransportError{
			Endpoint: r.endpoint, Scope: c.scope,
			Err:             redactedError{msg: c.redact(err.Error()), cause: err},
			callerCancelled: callerCancelled(callerCtx),
		}
	}
	defer resp.Body.Close()

	limit := int64(maxBodyBytes)
	if resp.StatusCode >= 300 {
		limit = maxErrorBodyBytes
	}
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	c.observe(r.endpoint, strconv.Itoa(resp.StatusCode), time.Since(start))
	if readErr != nil && resp.StatusCode < 300 {
		return nil, &TransportError{
			Endpoint: r.endpoint, Scope: c.scope,
			Err:             redactedError{msg: "read body: " + c.redact(readErr.Error()), cause: readErr},
			callerCancelled: callerCancelled(callerCtx),
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		apiErr := &APIError{
			Endpoint: r.endpoint, Scope: c.scope, StatusCode: resp.StatusCode,
			Message: c.redact(ParseErrorBody(data)), RunnerID: r.runnerID,
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			apiErr.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), c.now())
		}
		return nil, apiErr
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("forgejo %s: %w: body larger than %d bytes", r.endpoint, ErrInvalidResponse, limit)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

func (c *Client) observe(endpoint, code string, d time.Duration) {
	if c.observer != nil {
		c.observer.ObserveRequest(endpoint, code, d)
	}
}

// redactedError shows a redacted message while errors.Is and errors.As still reach the cause
// (context.DeadlineExceeded, *net.OpError, …).
type redactedError struct {
	msg   string
	cause error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.cause }
