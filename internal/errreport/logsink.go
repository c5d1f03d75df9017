package errreport

import (
	"fmt"
	"reflect"

	"github.com/go-logr/logr"
)

// The operator's controllers, as named in their builders (internal/controller/...).
const (
	controllerPool   = "runnerpool"
	controllerRunner = "runner"
)

// fields is what a logger's key/values tell about a reconcile. Only these keys are read: the
// rest of a log line's values never reach an event.
type fields struct {
	logger      string // the logger's name, e.g. "runner"
	controller  string
	namespace   string
	name        string
	reconcileID string
	pool        string // set by the Runner reconciler on its context's logger
}

func (f fields) with(kvs []any) fields {
	for i := 0; i+1 < len(kvs); i += 2 {
		key, ok := kvs[i].(string)
		if !ok {
			continue
		}
		var dst *string
		switch key {
		case "controller":
			dst = &f.controller
		case "namespace":
			dst = &f.namespace
		case "name":
			dst = &f.name
		case "reconcileID":
			dst = &f.reconcileID
		case "pool":
			dst = &f.pool
		default:
			continue
		}
		switch v := kvs[i+1].(type) {
		case string:
			*dst = v
		case fmt.Stringer:
			*dst = v.String()
		default:
			// types.UID, the reconcile ID's type, is a string type without a String method.
			if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
				*dst = rv.String()
			}
		}
	}
	return f
}

// tags are the event's tags: the pool and the runner, whichever controller failed.
func (f fields) tags() map[string]string {
	tags := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			tags[k] = v
		}
	}
	set("controller", f.controller)
	set("namespace", f.namespace)
	switch f.controller {
	case controllerPool:
		set("pool", f.name)
	case controllerRunner:
		set("runner", f.name)
		set("pool", f.pool)
	default:
		set("name", f.name)
	}
	return tags
}

// Logger returns l wrapped so that errors logged in a reconcile are reported as well as logged.
// A disabled Reporter returns l itself.
func (r *Reporter) Logger(l logr.Logger) logr.Logger {
	if !r.Enabled() {
		return l
	}
	delegate := l.GetSink()
	if delegate == nil { // logr.Discard()
		delegate = discardSink{}
	}
	// The wrapper is one more frame between the caller and the real sink: skip it, so log lines
	// still name their caller's file and line.
	if cd, ok := delegate.(logr.CallDepthLogSink); ok {
		delegate = cd.WithCallDepth(1)
	}
	return logr.New(&sink{delegate: delegate, r: r})
}

// sink forwards everything to the operator's own log sink and reports the Error calls that carry
// a controller's key/values: controller-runtime's "Reconciler error" for a failed or panicking
// reconcile, and the errors reconcilers log and handle themselves. Errors logged outside a
// reconcile (the jobs poll, the webhook receiver) are left to logs and metrics.
type sink struct {
	delegate logr.LogSink
	r        *Reporter
	fields   fields
}

var (
	_ logr.LogSink                = (*sink)(nil)
	_ logr.CallDepthLogSink       = (*sink)(nil)
	_ logr.CallStackHelperLogSink = (*sink)(nil)
)

// Init does not reach the delegate: it was initialised when its own Logger was made, and zapr
// would add the call depth a second time.
func (s *sink) Init(logr.RuntimeInfo) {}

func (s *sink) Enabled(level int) bool { return s.delegate.Enabled(level) }

func (s *sink) Info(level int, msg string, kvs ...any) { s.delegate.Info(level, msg, kvs...) }

func (s *sink) Error(err error, msg string, kvs ...any) {
	s.delegate.Error(err, msg, kvs...)
	f := s.fields.with(kvs)
	if f.controller == "" || err == nil {
		return
	}
	s.r.capture(report{err: err, msg: msg, fields: f})
}

func (s *sink) WithValues(kvs ...any) logr.LogSink {
	f := s.fields.with(kvs)
	// The Runner reconciler names its pool on its context's logger, which controller-runtime's
	// "Reconciler error" line does not use: remember it by reconcile ID for that line.
	if f.controller == controllerRunner && f.pool != "" && f.pool != s.fields.pool && f.reconcileID != "" {
		s.r.rememberPool(f.reconcileID, f.pool)
	}
	return &sink{delegate: s.delegate.WithValues(kvs...), r: s.r, fields: f}
}

func (s *sink) WithName(name string) logr.LogSink {
	f := s.fields
	if f.logger == "" {
		f.logger = name
	} else {
		f.logger += "." + name
	}
	return &sink{delegate: s.delegate.WithName(name), r: s.r, fields: f}
}

func (s *sink) WithCallDepth(depth int) logr.LogSink {
	cd, ok := s.delegate.(logr.CallDepthLogSink)
	if !ok {
		return s
	}
	return &sink{delegate: cd.WithCallDepth(depth), r: s.r, fields: s.fields}
}

func (s *sink) GetCallStackHelper() func() {
	if h, ok := s.delegate.(logr.CallStackHelperLogSink); ok {
		return h.GetCallStackHelper()
	}
	return func() {}
}

// poolRing remembers the pools of the latest Runner reconciles. Most reconciles succeed and are
// never looked up, so a fixed ring (not a map that must be pruned) holds them; an error is
// logged as its reconcile ends, long before a thousand others have started.
type poolRing struct {
	entries [1024]struct{ reconcileID, pool string }
	next    int
}

func (r *Reporter) rememberPool(reconcileID, pool string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pools.entries[r.pools.next] = struct{ reconcileID, pool string }{reconcileID, pool}
	r.pools.next = (r.pools.next + 1) % len(r.pools.entries)
}

func (r *Reporter) poolOf(reconcileID string) string {
	if reconcileID == "" {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.pools.entries {
		if e.reconcileID == reconcileID {
			return e.pool
		}
	}
	return ""
}

// discardSink stands in for logr.Discard's nil sink, so that a discarding logger still reports.
type discardSink struct{}

func (discardSink) Init(logr.RuntimeInfo)            {}
func (discardSink) Enabled(int) bool                 { return false }
func (discardSink) Info(int, string, ...any)         {}
func (discardSink) Error(error, string, ...any)      {}
func (d discardSink) WithValues(...any) logr.LogSink { return d }
func (d discardSink) WithName(string) logr.LogSink   { return d }
