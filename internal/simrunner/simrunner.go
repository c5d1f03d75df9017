// Package simrunner is a stand-in for `forgejo-runner one-job`: it speaks the runner protocol
// (Connect RPC under <instance>/api/actions) like the real runner, takes at most one task, "runs"
// it by waiting and writing log lines, reports a configured result, and ends with the real
// runner's exit codes. It talks to the server only over the wire, so it runs against the
// project's Forgejo simulator and against a real Forgejo 15 alike. It is a test and demo tool.
package simrunner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"gitea.dev/actions-proto-go/runner/v1/runnerv1connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpb/runnerv1ext"
)

// Exit codes of forgejo-runner one-job since 12.8.2.
const (
	ExitTaskRan = 0 // a task was received and run, whatever its result
	ExitError   = 1 // anything else went wrong (credentials, server, configuration)
	ExitNoTask  = 2 // no task was received
)

// Runner protocol headers (Forgejo's routers/api/actions/runner interceptor).
const (
	headerUUID       = "x-runner-uuid"
	headerToken      = "x-runner-token"
	headerRequestKey = "x-runner-request-key"
)

// DefaultVersion is what the simulated runner declares.
const DefaultVersion = "v12.8.2+simrunner"

// reportTimeout bounds the final report made after the context was cancelled (SIGTERM): the
// real runner still tells the server its task ended.
const reportTimeout = 10 * time.Second

// Config is what a runner pod is started with, plus how the simulated job behaves.
type Config struct {
	// URL is the Forgejo instance root (--url).
	URL string
	// UUID is the runner's UUID (--uuid).
	UUID string
	// TokenURL is where the runner token is read (--token-url): "file:/path", "file:///path" or a
	// bare path. The content is used verbatim: a trailing newline breaks authentication, as with
	// the real runner.
	TokenURL string
	// Labels are "name[:scheme[:arg]]" (--label); only the names are declared, as the real runner
	// does. Invalid labels are skipped, as the real runner does.
	Labels []string
	// Handle, when set, fetches with FetchSingleTask: only that job attempt (--handle).
	Handle string
	// Wait polls until a task comes or ctx ends, instead of fetching once (--wait).
	Wait bool

	// Version is declared to the server; empty means DefaultVersion.
	Version string
	// TaskDuration is how long a task "runs".
	TaskDuration time.Duration
	// Result is the job result reported; RESULT_UNSPECIFIED means success.
	Result runnerv1.Result
	// LogLines is how many log rows the task writes over its duration; zero means 3.
	LogLines int
	// PollInterval is the wait between fetches in wait mode; zero means 2s (the runner's
	// default fetch_interval).
	PollInterval time.Duration
	// HTTPClient carries the calls; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logf receives progress lines; nil discards them. The token is never logged.
	Logf func(format string, args ...any)
}

// Outcome is how a run ended.
type Outcome struct {
	// ExitCode is what forgejo-runner one-job would exit with.
	ExitCode int
	// TaskID is the task that ran, zero if none.
	TaskID int64
	// Result is the result reported for the task (cancelled after SIGTERM or a server-side
	// cancel), RESULT_UNSPECIFIED if none ran.
	Result runnerv1.Result
}

// label is a parsed runner label.
type label struct{ name, scheme, arg string }

// parseLabel follows forgejo-runner's labels.Parse: name[:scheme[:arg]], scheme docker (the
// default), host or lxc.
func parseLabel(s string) (label, error) {
	parts := strings.SplitN(s, ":", 3)
	l := label{name: parts[0], scheme: "docker"}
	if len(parts) > 1 {
		l.scheme = parts[1]
	}
	if len(parts) > 2 {
		l.arg = parts[2]
	}
	if l.name == "" {
		return label{}, fmt.Errorf("label %q: empty name", s)
	}
	switch l.scheme {
	case "docker", "host", "lxc":
	default:
		return label{}, fmt.Errorf("label %q: unsupported scheme %q", s, l.scheme)
	}
	return l, nil
}

// readToken reads the token as --token-url does: verbatim.
func readToken(tokenURL string) (string, error) {
	path := tokenURL
	if strings.HasPrefix(tokenURL, "file:") {
		u, err := url.Parse(tokenURL)
		if err != nil {
			return "", fmt.Errorf("token url: %w", err)
		}
		path = u.Path
		if path == "" {
			path = u.Opaque
		}
	} else if strings.Contains(tokenURL, "://") {
		return "", fmt.Errorf("token url %q: only file: is supported", tokenURL)
	}
	if path == "" {
		return "", errors.New("token url: no path")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	return string(data), nil
}

// ParseArgs reads one-job's command line (after "one-job") into a Config: --url, --uuid,
// --token-url, --label (repeatable), --handle, --wait.
func ParseArgs(args []string) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("one-job", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.StringVar(&cfg.URL, "url", "", "Forgejo instance URL")
	fs.StringVar(&cfg.UUID, "uuid", "", "runner UUID")
	fs.StringVar(&cfg.TokenURL, "token-url", "", "runner token location, file:/path")
	fs.StringVar(&cfg.Handle, "handle", "", "job handle to run")
	fs.BoolVar(&cfg.Wait, "wait", false, "wait for a task")
	fs.Func("label", "runner label name:scheme:arg (repeatable)", func(s string) error {
		cfg.Labels = append(cfg.Labels, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("one-job arguments: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("one-job arguments: unexpected %q", fs.Args())
	}
	return cfg, nil
}

// runner is one run's state.
type runner struct {
	cfg    Config
	client runnerv1connect.RunnerServiceClient
	single *connect.Client[runnerv1ext.FetchSingleTaskRequest, runnerv1ext.FetchSingleTaskResponse]
	logf   func(format string, args ...any)
}

// Run behaves like `forgejo-runner one-job`. The error explains an ExitError outcome; it is nil
// for the other exit codes.
func Run(ctx context.Context, cfg Config) (Outcome, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return Outcome{ExitCode: ExitError}, err
	}
	return r.run(ctx)
}

func newRunner(cfg Config) (*runner, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("simrunner: invalid url %q", cfg.URL)
	}
	if cfg.UUID == "" {
		return nil, errors.New("simrunner: uuid is required")
	}
	token, err := readToken(cfg.TokenURL)
	if err != nil {
		return nil, fmt.Errorf("simrunner: %w", err)
	}
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	if cfg.Result == runnerv1.Result_RESULT_UNSPECIFIED {
		cfg.Result = runnerv1.Result_RESULT_SUCCESS
	}
	if cfg.LogLines <= 0 {
		cfg.LogLines = 3
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	uuid := cfg.UUID
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set(headerUUID, uuid)
			req.Header().Set(headerToken, token)
			return next(ctx, req)
		}
	})
	base := strings.TrimRight(cfg.URL, "/") + "/api/actions"
	return &runner{
		cfg:    cfg,
		client: runnerv1connect.NewRunnerServiceClient(httpClient, base, connect.WithInterceptors(auth)),
		single: runnerv1ext.NewFetchSingleTaskClient(httpClient, base, connect.WithInterceptors(auth)),
		logf:   logf,
	}, nil
}

func (r *runner) run(ctx context.Context) (Outcome, error) {
	var names []string
	for _, s := range r.cfg.Labels {
		l, err := parseLabel(s)
		if err != nil {
			r.logf("simrunner: ignored invalid label: %v", err)
			continue
		}
		names = append(names, l.name)
	}
	if len(names) == 0 {
		r.logf("simrunner: no labels configured, the runner may not be able to pick up jobs")
	}

	_, err := r.client.Declare(ctx, connect.NewRequest(&runnerv1.DeclareRequest{Version: r.cfg.Version, Labels: names}))
	switch {
	case connect.CodeOf(err) == connect.CodeUnimplemented:
		r.logf("simrunner: server does not implement Declare, continuing")
	case err != nil:
		// forgejo-runner's createRunner: any other Declare error ends one-job with exit 1, a
		// SIGTERM that cancels the call included.
		return Outcome{ExitCode: ExitError}, fmt.Errorf("declare runner %s: %w", r.cfg.UUID, err)
	default:
		r.logf("simrunner: declared labels %v, version %s", names, r.cfg.Version)
	}

	task := r.fetch(ctx)
	if task == nil {
		if r.cfg.Wait {
			// forgejo-runner's single task poller returns without error when it is stopped
			// while waiting: SIGTERM before a task came exits 0, as a task that ran does.
			r.logf("simrunner: stopped while waiting for a task")
			return Outcome{ExitCode: ExitTaskRan}, nil
		}
		r.logf("simrunner: no task received")
		return Outcome{ExitCode: ExitNoTask}, nil
	}
	return r.execute(ctx, task)
}

// fetch asks for a task once, or in wait mode until one comes or ctx ends; nil means none.
// Like forgejo-runner's single task poller it never fails: in wait mode it retries every
// error, Unauthenticated included (so a runner whose registration was deleted polls until it
// is stopped), and without --wait an error is just "no task". It always sends tasks_version 0.
func (r *runner) fetch(ctx context.Context) *runnerv1.Task {
	key := newRequestKey()
	for {
		task, err := r.fetchOnce(ctx, key)
		switch {
		case task != nil:
			// Even if ctx just ended: the server has assigned it, so it must hear how it ended.
			return task
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// The same key again: if the lost answer held a task, the server gives that task
			// back instead of a second one.
			r.logf("simrunner: fetch failed: %v", err)
		default:
			key = newRequestKey()
		}
		if !r.cfg.Wait || !sleep(ctx, r.cfg.PollInterval) {
			return nil
		}
	}
}

func (r *runner) fetchOnce(ctx context.Context, key string) (*runnerv1.Task, error) {
	if r.cfg.Handle != "" {
		req := connect.NewRequest(&runnerv1ext.FetchSingleTaskRequest{Handle: r.cfg.Handle, TasksVersion: 0})
		req.Header().Set(headerRequestKey, key)
		resp, err := r.single.CallUnary(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetTask(), nil
	}
	req := connect.NewRequest(&runnerv1.FetchTaskRequest{TasksVersion: 0})
	req.Header().Set(headerRequestKey, key)
	resp, err := r.client.FetchTask(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetTask(), nil
}

// execute "runs" a task: log rows spread over TaskDuration, state heartbeats, then the final
// report. SIGTERM (ctx) or a cancel from the server ends it early with RESULT_CANCELLED.
func (r *runner) execute(ctx context.Context, task *runnerv1.Task) (Outcome, error) {
	out := Outcome{ExitCode: ExitTaskRan, TaskID: task.GetId(), Result: r.cfg.Result}
	started := timestamppb.Now()
	r.logf("simrunner: running task %d for %s", task.GetId(), r.cfg.TaskDuration)

	var logIndex int64
	step := r.cfg.TaskDuration / time.Duration(r.cfg.LogLines)
	for i := range r.cfg.LogLines {
		if !sleep(ctx, step) {
			out.Result = runnerv1.Result_RESULT_CANCELLED
			break
		}
		row := &runnerv1.LogRow{Time: timestamppb.Now(), Content: fmt.Sprintf("simulated step output %d/%d", i+1, r.cfg.LogLines)}
		ack, err := r.client.UpdateLog(ctx, connect.NewRequest(&runnerv1.UpdateLogRequest{TaskId: task.GetId(), Index: logIndex, Rows: []*runnerv1.LogRow{row}}))
		if err == nil {
			logIndex = ack.Msg.GetAckIndex()
		}
		cancelled, gone, err := r.heartbeat(ctx, task.GetId(), started)
		switch {
		case ctx.Err() != nil:
			out.Result = runnerv1.Result_RESULT_CANCELLED
		case gone:
			// An ephemeral runner is deleted as soon as its job is cancelled: nothing left to report.
			r.logf("simrunner: task %d was ended by the server", task.GetId())
			out.Result = runnerv1.Result_RESULT_CANCELLED
			return out, nil
		case cancelled:
			out.Result = runnerv1.Result_RESULT_CANCELLED
		case err != nil:
			r.logf("simrunner: report state of task %d: %v", task.GetId(), err)
		}
		if out.Result == runnerv1.Result_RESULT_CANCELLED {
			break
		}
	}

	// After SIGTERM the run's context is over, but the server must still hear the task ended.
	reportCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	_, err := r.client.UpdateLog(reportCtx, connect.NewRequest(&runnerv1.UpdateLogRequest{
		TaskId: task.GetId(), Index: logIndex, NoMore: true,
		Rows: []*runnerv1.LogRow{{Time: timestamppb.Now(), Content: "simulated job finished: " + resultName(out.Result)}},
	}))
	if err != nil && connect.CodeOf(err) != connect.CodeUnauthenticated {
		r.logf("simrunner: final log of task %d: %v", task.GetId(), err)
	}
	_, err = r.client.UpdateTask(reportCtx, connect.NewRequest(&runnerv1.UpdateTaskRequest{State: &runnerv1.TaskState{
		Id: task.GetId(), Result: out.Result, StartedAt: started, StoppedAt: timestamppb.Now(),
	}}))
	if err != nil && !(out.Result == runnerv1.Result_RESULT_CANCELLED && connect.CodeOf(err) == connect.CodeUnauthenticated) {
		return Outcome{ExitCode: ExitError, TaskID: out.TaskID, Result: out.Result},
			fmt.Errorf("report result of task %d: %w", task.GetId(), err)
	}
	r.logf("simrunner: task %d finished: %s", task.GetId(), resultName(out.Result))
	return out, nil
}

// heartbeat reports the running state; the answer says whether the server cancelled the task.
// gone means the runner's credentials no longer work, which for an ephemeral runner in the
// middle of its task means the server ended the task.
func (r *runner) heartbeat(ctx context.Context, taskID int64, started *timestamppb.Timestamp) (cancelled, gone bool, err error) {
	resp, err := r.client.UpdateTask(ctx, connect.NewRequest(&runnerv1.UpdateTaskRequest{State: &runnerv1.TaskState{Id: taskID, StartedAt: started}}))
	if err != nil {
		return false, connect.CodeOf(err) == connect.CodeUnauthenticated, err
	}
	return resp.Msg.GetState().GetResult() == runnerv1.Result_RESULT_CANCELLED, false, nil
}

func resultName(r runnerv1.Result) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RESULT_"))
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func newRequestKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
