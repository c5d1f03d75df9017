// Package errreport sends reconcile errors and recovered reconcile panics to Sentry or GlitchTip
// (both speak Sentry's envelope protocol), opt-in: without a DSN it does nothing and starts
// nothing.
//
// Where errors are caught: every controller-runtime controller logs a failed reconcile as
// "Reconciler error" through the manager's logger, with the controller's name, the object's
// namespace and name and the reconcile ID as key/values; a reconcile panic is recovered by the
// controller (RecoverPanic defaults to true and the operator leaves it so), handed to
// k8s.io/apimachinery's utilruntime.PanicHandlers with the reconcile's context, and then logged
// as "Reconciler error" too. So a logr.LogSink wrapper around the operator's logger plus one
// panic handler cover every controller, present and future, without a line in any reconciler.
// A reconcile.Reconciler wrapper would have to be threaded through each controller's builder,
// and would not see the errors a reconciler logs and handles itself (garbage collection,
// deregistration retries).
//
// What is sent is scrubbed twice: an event is built from the error's text with Forgejo's own
// message (the response body the REST client kept in forgejo.APIError) withheld, and a
// BeforeSend hook redacts anything token-shaped or under a sensitive key from every string of
// every event, and drops request data, breadcrumbs and source context.
package errreport

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/getsentry/sentry-go"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/version"
)

// DefaultEnvironment is the environment events carry when none is configured: Sentry's other
// SDKs default to it, so dashboards filtering on it see the operator too.
const DefaultEnvironment = "production"

// DefaultRepeatWindow is how long an identical error (same controller, object and text) is not
// sent again. controller-runtime retries a failing object with exponential back-off, a dozen
// times in its first minute; one event per window says as much and spares the project's quota.
const DefaultRepeatWindow = 5 * time.Minute

// flushTimeout bounds how long Close waits for queued events at shutdown.
const flushTimeout = 5 * time.Second

// errInvalidDSN does not repeat the DSN: it holds the project's key.
var errInvalidDSN = errors.New("invalid Sentry DSN (want https://KEY@HOST/PROJECT)")

// ValidateDSN checks a DSN's form without starting anything, for flag validation.
func ValidateDSN(dsn string) error {
	if _, err := sentry.NewDsn(dsn); err != nil {
		return errInvalidDSN
	}
	return nil
}

// Options configures the reporter.
type Options struct {
	// DSN is the Sentry or GlitchTip project's DSN; empty turns reporting off.
	DSN string
	// Environment tags every event; empty means DefaultEnvironment.
	Environment string
	// Release tags every event; empty means the operator's version (internal/version).
	Release string
	// ServerName names the reporting replica; empty means the host (the pod) name.
	ServerName string
	// RepeatWindow: see DefaultRepeatWindow; zero means the default, negative sends every repeat.
	RepeatWindow time.Duration
	// HTTPTransport carries events; nil means http.DefaultTransport (proxy from the environment).
	HTTPTransport http.RoundTripper
	// Now is the clock of the repeat window; nil means time.Now.
	Now func() time.Time
}

// Reporter sends events. A nil or disabled Reporter is valid and sends nothing.
type Reporter struct {
	client *sentry.Client
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex
	pools  poolRing             // reconcile ID → pool, for Runner reconciles
	panics map[string]recovered // reconcile ID → a recovered panic awaiting its "Reconciler error"
	recent map[string]time.Time // repeat key → when last sent
}

// New returns a Reporter. Without a DSN it is disabled: no client, no transport, no goroutine,
// no panic handler.
func New(opts Options) (*Reporter, error) {
	if opts.DSN == "" {
		return &Reporter{}, nil
	}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:           opts.DSN,
		Release:       cmp.Or(opts.Release, version.Version),
		Environment:   cmp.Or(opts.Environment, DefaultEnvironment),
		ServerName:    opts.ServerName,
		HTTPTransport: opts.HTTPTransport,
		// No HTTP integration is installed, so the SDK collects no request or user data of its
		// own; scrubEvent drops any anyway.
		BeforeSend: scrubEvent,
		// Events only: no tracing, logs or metrics.
		EnableTracing: false,
	})
	if err != nil {
		return nil, errInvalidDSN
	}
	r := &Reporter{
		client: client,
		window: cmp.Or(opts.RepeatWindow, DefaultRepeatWindow),
		now:    opts.Now,
		panics: map[string]recovered{},
		recent: map[string]time.Time{},
	}
	if opts.Now == nil {
		r.now = time.Now
	}
	installPanicHandler(r)
	return r, nil
}

// Enabled reports whether events are sent.
func (r *Reporter) Enabled() bool { return r != nil && r.client != nil }

// Flush waits up to timeout for queued events to be sent; false when some were not.
func (r *Reporter) Flush(timeout time.Duration) bool {
	if !r.Enabled() {
		return true
	}
	return r.client.Flush(timeout)
}

// Close sends what is queued (waiting a few seconds at most) and stops the transport.
func (r *Reporter) Close() {
	if !r.Enabled() {
		return
	}
	uninstallPanicHandler(r)
	r.client.Flush(flushTimeout)
	r.client.Close()
}

// report is one error to send, with what the logger knew of its reconcile.
type report struct {
	err    error
	msg    string
	fields fields
	// panic is the recovered panic behind err, when known before capture.
	panic *recovered
}

// capture builds the event for rep and sends it, unless an identical one went out within the
// repeat window.
func (r *Reporter) capture(rep report) {
	f := rep.fields
	if f.pool == "" && f.controller == controllerRunner {
		f.pool = r.poolOf(f.reconcileID)
	}
	p, isPanic := r.takePanic(f.reconcileID, rep.err)
	if rep.panic != nil {
		p, isPanic = *rep.panic, true
	}

	exc := sentry.Exception{Type: errorType(rep.err), Value: summarize(rep.err)}
	if isPanic {
		exc = sentry.Exception{
			Type:       "panic",
			Value:      panicText(p.value),
			Stacktrace: p.stack,
			Mechanism:  &sentry.Mechanism{Type: "controller-runtime.RecoverPanic", Handled: new(true)},
		}
	}
	if !r.firstInWindow(f, exc) {
		return
	}

	event := sentry.NewEvent()
	event.Level = sentry.LevelError
	event.Message = rep.msg
	event.Logger = f.logger
	event.Exception = []sentry.Exception{exc}
	event.Tags = f.tags()
	if isPanic {
		event.Tags["panic"] = "true"
	}
	if f.reconcileID != "" {
		event.Contexts["reconcile"] = sentry.Context{"reconcileID": f.reconcileID}
	}
	r.client.CaptureEvent(event, nil, nil)
}

// firstInWindow records the event's repeat key and says whether it should be sent.
func (r *Reporter) firstInWindow(f fields, exc sentry.Exception) bool {
	if r.window < 0 {
		return true
	}
	key := f.controller + "\x00" + f.namespace + "\x00" + f.name + "\x00" + exc.Type + "\x00" + exc.Value
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.recent[key]; ok && now.Sub(last) < r.window {
		return false
	}
	if len(r.recent) >= maxRecent {
		for k, t := range r.recent {
			if now.Sub(t) >= r.window {
				delete(r.recent, k)
			}
		}
		if len(r.recent) >= maxRecent {
			// Thousands of distinct failing objects at once: forget them all rather than grow.
			clear(r.recent)
		}
	}
	r.recent[key] = now
	return true
}

// maxRecent bounds the repeat window's memory.
const maxRecent = 4096

// errorType names an error for Sentry's issue title: the type of the innermost error of its
// chain (fmt's and errors' wrappers say nothing), e.g. "*forgejo.APIError".
func errorType(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	if err == nil {
		return "error"
	}
	t := reflect.TypeOf(err).String()
	switch t {
	case "*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors", "*errors.joinError":
		return "error"
	}
	return t
}

// panicText is a panic value as an event shows it, scrubbed as an error's text is.
func panicText(v any) string {
	if err, ok := v.(error); ok {
		return summarize(err)
	}
	return summarize(errors.New(fmt.Sprint(v)))
}
