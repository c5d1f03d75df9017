package errreport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	uberzap "go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/version"
)

// sentryStandIn is a local Sentry/GlitchTip: it accepts what the SDK posts to a project's
// envelope endpoint, /api/<project>/envelope/, and keeps every request body as received.
type sentryStandIn struct {
	srv *httptest.Server

	mu     sync.Mutex
	bodies [][]byte
	paths  []string
}

func newSentryStandIn(t *testing.T) *sentryStandIn {
	t.Helper()
	s := &sentryStandIn{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.paths = append(s.paths, r.URL.Path)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"00000000000000000000000000000000"}`)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// dsn is the stand-in's DSN for project 42.
func (s *sentryStandIn) dsn() string {
	return "http://publickey@" + strings.TrimPrefix(s.srv.URL, "http://") + "/42"
}

// received is everything posted so far, headers and bodies, as one text.
func (s *sentryStandIn) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(bytes.Join(s.bodies, []byte("\n")))
}

// event is the part of a Sentry event the tests read.
type event struct {
	Level       string            `json:"level"`
	Message     string            `json:"message"`
	Release     string            `json:"release"`
	Environment string            `json:"environment"`
	Tags        map[string]string `json:"tags"`
	Exception   []struct {
		Type       string `json:"type"`
		Value      string `json:"value"`
		Stacktrace *struct {
			Frames []struct {
				Function string `json:"function"`
				Module   string `json:"module"`
			} `json:"frames"`
		} `json:"stacktrace"`
	} `json:"exception"`
	Contexts map[string]map[string]any `json:"contexts"`
}

// events decodes the event items of every envelope received.
func (s *sentryStandIn) events(t *testing.T) []event {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []event
	for i, body := range s.bodies {
		if !strings.HasPrefix(s.paths[i], "/api/42/envelope/") {
			t.Errorf("request to %s, want the envelope endpoint /api/42/envelope/", s.paths[i])
			continue
		}
		// An envelope: a header line, then items of a header line and a payload line each.
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 0, 1<<20), 8<<20)
		sc.Scan()
		for sc.Scan() {
			var item struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(sc.Bytes(), &item); err != nil {
				t.Fatalf("item header %q: %v", sc.Text(), err)
			}
			if !sc.Scan() {
				t.Fatalf("item %s without payload", item.Type)
			}
			if item.Type != "event" {
				continue
			}
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("event %q: %v", sc.Text(), err)
			}
			out = append(out, ev)
		}
	}
	return out
}

// fixedClock keeps every event of a test inside one repeat window.
func fixedClock() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func newReporter(t *testing.T, s *sentryStandIn, env string) *Reporter {
	t.Helper()
	r, err := New(Options{DSN: s.dsn(), Environment: env, Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// logLines is a logger that keeps its lines, as the operator's zap logger would print them.
func logLines() (logr.Logger, *[]string) {
	var mu sync.Mutex
	lines := &[]string{}
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		*lines = append(*lines, prefix+" "+args)
	}, funcr.Options{}), lines
}

// runController runs a real controller-runtime controller named name, with the operator's
// defaults (RecoverPanic unset), logging through log, and feeds it one request per name.
func runController(t *testing.T, name string, log logr.Logger, rec reconcile.Func, objects ...string) {
	t.Helper()
	c, err := controller.NewUnmanaged(name, controller.Options{
		Reconciler:         rec,
		Logger:             log,
		SkipNameValidation: new(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Watch(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		for _, o := range objects {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ci", Name: o}})
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Start(ctx); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// wait blocks until ch is closed, failing the test after a generous bound.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("gave up waiting for %s", what)
	}
}

// onceFailing fails a request's first reconcile with fail() and signals done at its second.
func onceFailing(fail func(ctx context.Context, req reconcile.Request) (context.Context, error), done chan struct{}) reconcile.Func {
	var mu sync.Mutex
	calls := 0
	return func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			_, err := fail(ctx, req)
			return reconcile.Result{}, err
		}
		if n == 2 {
			close(done)
		}
		return reconcile.Result{}, nil
	}
}

func TestReconcileErrorArrivesWithPoolTagsReleaseAndEnvironment(t *testing.T) {
	s := newSentryStandIn(t)
	r := newReporter(t, s, "staging")
	base, lines := logLines()
	done := make(chan struct{})
	runController(t, controllerPool, r.Logger(base), onceFailing(func(ctx context.Context, _ reconcile.Request) (context.Context, error) {
		return ctx, errors.New("list runners: connection refused")
	}, done), "pool-a")
	wait(t, done, "the retry after the error")
	if !r.Flush(10 * time.Second) {
		t.Fatal("flush timed out")
	}

	evs := s.events(t)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %s", len(evs), s.received())
	}
	ev := evs[0]
	if ev.Release != version.Version || ev.Environment != "staging" || ev.Level != "error" {
		t.Errorf("release %q environment %q level %q, want %q, staging, error", ev.Release, ev.Environment, ev.Level, version.Version)
	}
	want := map[string]string{"controller": "runnerpool", "namespace": "ci", "pool": "pool-a"}
	for k, v := range want {
		if ev.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q (tags %v)", k, ev.Tags[k], v, ev.Tags)
		}
	}
	if ev.Message != "Reconciler error" || len(ev.Exception) != 1 || ev.Exception[0].Value != "list runners: connection refused" {
		t.Errorf("message %q exception %+v", ev.Message, ev.Exception)
	}
	if id, _ := ev.Contexts["reconcile"]["reconcileID"].(string); id == "" {
		t.Errorf("no reconcile ID in contexts %v", ev.Contexts)
	}
	// The operator's own log still has the line.
	if !strings.Contains(strings.Join(*lines, "\n"), `"Reconciler error"`) {
		t.Errorf("the log lost the error line: %v", *lines)
	}
}

func TestRunnerErrorNamesItsPool(t *testing.T) {
	s := newSentryStandIn(t)
	r := newReporter(t, s, "")
	base, _ := logLines()
	done := make(chan struct{})
	runController(t, controllerRunner, r.Logger(base), onceFailing(func(ctx context.Context, _ reconcile.Request) (context.Context, error) {
		// As the Runner reconciler does: the pool goes on its context's logger only.
		ctx = logf.IntoContext(ctx, logf.FromContext(ctx).WithValues("pool", "pool-b"))
		return ctx, errors.New("create pod: quota exceeded")
	}, done), "pool-b-0a1b2c3d4e")
	wait(t, done, "the retry after the error")
	r.Flush(10 * time.Second)

	evs := s.events(t)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %s", len(evs), s.received())
	}
	if got := evs[0].Tags; got["runner"] != "pool-b-0a1b2c3d4e" || got["pool"] != "pool-b" || got["controller"] != "runner" {
		t.Errorf("tags %v, want runner pool-b-0a1b2c3d4e of pool pool-b", got)
	}
	if evs[0].Environment != DefaultEnvironment {
		t.Errorf("environment %q, want the default %q", evs[0].Environment, DefaultEnvironment)
	}
}

func TestPanicInReconcileIsReportedOnceWithItsStackAndTheControllerGoesOn(t *testing.T) {
	s := newSentryStandIn(t)
	r := newReporter(t, s, "")
	base, _ := logLines()
	token := strings.Repeat("ab12", 10)
	done := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	runController(t, controllerPool, r.Logger(base), func(_ context.Context, _ reconcile.Request) (reconcile.Result, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			panicInReconcile(token)
		}
		if n == 2 {
			close(done)
		}
		return reconcile.Result{}, nil
	}, "pool-p")
	// The controller recovered (RecoverPanic defaults to true, and the operator leaves it so)
	// and reconciled the object again.
	wait(t, done, "the reconcile after the panic")
	r.Flush(10 * time.Second)

	evs := s.events(t)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want the panic once: %s", len(evs), s.received())
	}
	ev := evs[0]
	if ev.Tags["panic"] != "true" || ev.Tags["pool"] != "pool-p" || len(ev.Exception) != 1 {
		t.Fatalf("tags %v exception %+v", ev.Tags, ev.Exception)
	}
	exc := ev.Exception[0]
	if exc.Type != "panic" || exc.Value != "runner state corrupt (runner token [redacted])" {
		t.Errorf("exception %s: %q", exc.Type, exc.Value)
	}
	found := false
	if exc.Stacktrace != nil {
		for _, f := range exc.Stacktrace.Frames {
			found = found || f.Function == "panicInReconcile"
		}
	}
	if !found {
		t.Errorf("the stack lacks the panicking function: %+v", exc.Stacktrace)
	}
	if strings.Contains(s.received(), token) {
		t.Errorf("the token in the panic's value was sent")
	}
}

//go:noinline
func panicInReconcile(token string) {
	panic(fmt.Sprintf("runner state corrupt (runner token %s)", token))
}

func TestEventsNeverCarryTokensOrForgejosAnswer(t *testing.T) {
	const (
		apiToken    = "0123456789abcdef0123456789abcdef01234567"
		runnerToken = "fedcba9876543210fedcba9876543210fedcba98"
		otherToken  = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
		bodyMarker  = "SECRET-BODY-MARKER"
	)
	// A Forgejo that refuses the registration and says more than it should.
	forgejoSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = fmt.Fprintf(w, `{"message":"token does not have at least one of required scope(s): [write:repository] %s %s"}`, bodyMarker, otherToken)
	}))
	t.Cleanup(forgejoSrv.Close)
	fc, err := forgejo.New(forgejo.Config{BaseURL: forgejoSrv.URL, Token: apiToken, Scope: forgejo.RepositoryScope("acme", "app")})
	if err != nil {
		t.Fatal(err)
	}
	_, forgejoErr := fc.RegisterRunner(context.Background(), "pool-s-1", "pool ci/pool-s", true)
	if !strings.Contains(forgejoErr.Error(), bodyMarker) {
		t.Fatalf("the client's error should carry Forgejo's message for this test to mean anything: %v", forgejoErr)
	}

	s := newSentryStandIn(t)
	r := newReporter(t, s, "")
	base, _ := logLines()
	done := make(chan struct{})
	runController(t, controllerPool, r.Logger(base), onceFailing(func(ctx context.Context, _ reconcile.Request) (context.Context, error) {
		// Everything a careless error could carry.
		logf.FromContext(ctx).Error(errors.New("Authorization: token "+apiToken), "handled, logged", "token", apiToken)
		return ctx, fmt.Errorf("runner %s with token=%s, api token %s, dsn https://key:pass@sentry.example/1: %w",
			"pool-s-1", runnerToken, apiToken, forgejoErr)
	}, done), "pool-s")
	wait(t, done, "the retry after the error")
	r.Flush(10 * time.Second)

	evs := s.events(t)
	if len(evs) != 2 {
		t.Fatalf("got %d events, want the logged and the returned error: %s", len(evs), s.received())
	}
	all := s.received()
	for _, secret := range []string{apiToken, runnerToken, otherToken, bodyMarker, "key:pass"} {
		if strings.Contains(all, secret) {
			t.Errorf("%q was sent: %s", secret, all)
		}
	}
	var returned string
	for _, ev := range evs {
		if ev.Message == "Reconciler error" {
			returned = ev.Exception[0].Value
		}
	}
	// What is left still says what to fix.
	for _, want := range []string{"POST /runners", "403", "refusal TokenScopeMissing write:repository", "runner pool-s-1"} {
		if !strings.Contains(returned, want) {
			t.Errorf("the reported error %q lacks %q", returned, want)
		}
	}
}

func TestRepeatsWithinTheWindowAreSentOnce(t *testing.T) {
	s := newSentryStandIn(t)
	now := fixedClock()
	r, err := New(Options{DSN: s.dsn(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	log := r.Logger(logr.Discard()).WithValues("controller", "runnerpool", "namespace", "ci", "name", "p")
	log.Error(errors.New("boom"), "Reconciler error")
	log.Error(errors.New("boom"), "Reconciler error")
	log.Error(errors.New("another"), "Reconciler error")
	now = now.Add(DefaultRepeatWindow)
	log.Error(errors.New("boom"), "Reconciler error")
	// Not a reconcile: left to logs and metrics.
	r.Logger(logr.Discard()).Error(errors.New("list jobs"), "poll")
	r.Flush(10 * time.Second)
	var got []string
	for _, ev := range s.events(t) {
		got = append(got, ev.Exception[0].Value)
	}
	slices.Sort(got)
	if strings.Join(got, ",") != "another,boom,boom" {
		t.Errorf("sent %v, want boom, another and boom again after the window", got)
	}
}

func TestWithoutDSNNothingStartsAndNothingIsSent(t *testing.T) {
	s := newSentryStandIn(t)
	// The SDK would read SENTRY_DSN by itself; the package must not: only the flag's resolution
	// in main does.
	t.Setenv("SENTRY_DSN", s.dsn())
	before := sentryGoroutines()
	handlers := len(utilruntime.PanicHandlers)

	r, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Enabled() {
		t.Fatal("enabled without a DSN")
	}
	base := logr.Discard()
	if got := r.Logger(base); got.GetSink() != base.GetSink() {
		t.Errorf("the logger was wrapped without a DSN")
	}
	r.Logger(base).WithValues("controller", "runnerpool").Error(errors.New("boom"), "Reconciler error")
	if !r.Flush(time.Second) {
		t.Error("a disabled reporter has nothing to flush")
	}
	r.Close()

	if after := sentryGoroutines(); after > before {
		t.Errorf("%d sentry-go goroutines after, %d before", after, before)
	}
	if len(utilruntime.PanicHandlers) != handlers {
		t.Errorf("a panic handler was installed")
	}
	if got := s.received(); got != "" {
		t.Errorf("sent without a DSN: %s", got)
	}
}

// sentryGoroutines counts the goroutines running sentry-go's code.
func sentryGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "getsentry/sentry-go") {
			n++
		}
	}
	return n
}

func TestInvalidDSNIsRefusedWithoutQuotingIt(t *testing.T) {
	_, err := New(Options{DSN: "not a dsn secretkey"})
	if err == nil || strings.Contains(err.Error(), "secretkey") {
		t.Fatalf("error %v", err)
	}
}

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{"token 0123456789abcdef0123456789abcdef01234567 rejected", "token [redacted] rejected"},
		{`{"token":"s3cr3t-value","name":"x"}`, `{"token":"[redacted]","name":"x"}`},
		{"runner_token=abc; next", "runner_token=[redacted]; next"},
		{"Authorization: token abc, then", "Authorization: [redacted], then"},
		{"Bearer eyJhbGciOi.eyJzdWIiOi.sig", "Bearer [redacted]"},
		{"id eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln end", "id [redacted] end"},
		{"https://user:pass@host/x and https://key@sentry.example/1", "https://[redacted]@host/x and https://[redacted]@sentry.example/1"},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[redacted]"},
		{"unauthorized: API token rejected", "unauthorized: API token rejected"},
		{"list runners: connection refused", "list runners: connection refused"},
	}
	for _, c := range cases {
		if got := redact(c.in); got != c.want {
			t.Errorf("redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSummarizeCutsAnUntypedForgejoAnswer(t *testing.T) {
	// An APIError formatted with %v has lost its type: its text is cut after the status.
	err := fmt.Errorf("register: %v", "forgejo POST /runners (repository a/b): 500 server error: stack trace with secrets")
	got := summarize(err)
	if got != "register: forgejo POST /runners (repository a/b): 500 [details withheld]" {
		t.Errorf("summarize = %q", got)
	}
}

func TestLogLinesStillNameTheirCaller(t *testing.T) {
	s := newSentryStandIn(t)
	r := newReporter(t, s, "")
	var buf bytes.Buffer
	log := r.Logger(crzap.New(crzap.WriteTo(&buf), crzap.RawZapOpts(uberzap.AddCaller()))).WithName("x").WithValues("controller", "runnerpool")
	log.Error(errors.New("boom"), "Reconciler error")
	log.Info("fine")
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if !strings.Contains(line, `"caller":"errreport/errreport_test.go:`) {
			t.Errorf("line %s does not name this file as its caller", line)
		}
	}
}
