package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

const secret = "s3cret-hook-key"

var fixedNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// sink records the events it is given.
type sink struct {
	mu     sync.Mutex
	events []webhook.JobEvent
	repos  []webhook.RepositoryEvent
}

func (s *sink) HandleRepositoryEvent(_ context.Context, ev webhook.RepositoryEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos = append(s.repos, ev)
}

func (s *sink) gotRepos() []webhook.RepositoryEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos)
}

func (s *sink) HandleJobEvent(_ context.Context, ev webhook.JobEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
}

func (s *sink) got() []webhook.JobEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// results counts observed results.
type results struct {
	mu sync.Mutex
	n  map[webhook.Result]int
}

func (r *results) ObserveDelivery(res webhook.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[res]++
}

func (r *results) count(res webhook.Result) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[res]
}

type env struct {
	h   *webhook.Handler
	snk *sink
	obs *results
}

func newEnv(t *testing.T, mod ...func(*webhook.Options)) *env {
	t.Helper()
	e := &env{snk: &sink{}, obs: &results{n: map[webhook.Result]int{}}}
	opts := webhook.Options{
		Secrets:  webhook.StaticSecrets{[]byte(secret)},
		Sink:     e.snk,
		Observer: e.obs,
		Now:      func() time.Time { return fixedNow },
	}
	for _, m := range mod {
		m(&opts)
	}
	h, err := webhook.New(opts)
	if err != nil {
		t.Fatalf("new handler: %v", err)
	}
	e.h = h
	return e
}

func sign(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// delivery is one request; headers are set as given, none by default.
type delivery struct {
	method  string
	body    []byte
	headers map[string]string
}

// forgejoHeaders are the headers Forgejo sends for a delivery signed with key.
func forgejoHeaders(key, id, event string, body []byte) map[string]string {
	sig := sign(key, body)
	return map[string]string{
		"Content-Type":         "application/json",
		"X-Forgejo-Delivery":   id,
		"X-Forgejo-Event":      event,
		"X-Forgejo-Event-Type": event,
		"X-Forgejo-Signature":  sig,
		"X-Gitea-Delivery":     id,
		"X-Gitea-Event":        event,
		"X-Gitea-Event-Type":   event,
		"X-Gitea-Signature":    sig,
		"X-Hub-Signature-256":  "sha256=" + sig,
	}
}

func (e *env) send(t *testing.T, d delivery) *httptest.ResponseRecorder {
	t.Helper()
	if d.method == "" {
		d.method = http.MethodPost
	}
	req := httptest.NewRequest(d.method, "/webhook", bytes.NewReader(d.body))
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// jobPayload builds a payload as Forgejo (and the simulator) does.
func jobPayload(t testing.TB, action, status string, mod ...func(*forgejosim.WorkflowJobPayload)) []byte {
	t.Helper()
	owner := &forgejosim.APIUser{ID: 3, Login: "acme", UserName: "acme"}
	repo := &forgejosim.APIRepository{ID: 7, Owner: owner, Name: "app", FullName: "acme/app"}
	p := forgejosim.WorkflowJobPayload{
		Action: action,
		Job: &forgejosim.APIJob{
			ID: 42, RunID: 9, Attempt: 2, Handle: "h-42", RepoID: 7, OwnerID: 3, Name: "build",
			HTMLURL: "https://forgejo.example/acme/app/actions/runs/9/jobs/0/attempt/2",
			Needs:   []string{}, RunsOn: []string{"docker", "amd64"}, TaskID: 0, Status: status,
		},
		Run:        &forgejosim.APIRun{ID: 9, Repo: repo, Status: status},
		Repository: repo,
	}
	for _, m := range mod {
		m(&p)
	}
	body, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatalf("encode payload: %v", err)
	}
	return body
}

func expectStatus(t *testing.T, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status %d (%q), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), want)
	}
}

func TestValidDeliveryReachesSink(t *testing.T) {
	e := newEnv(t)
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	rec := e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d-1", webhook.EventWorkflowJobWaiting, body)})
	expectStatus(t, rec, http.StatusAccepted)

	got := e.snk.got()
	if len(got) != 1 {
		t.Fatalf("sink got %d events, want 1", len(got))
	}
	want := webhook.JobEvent{
		DeliveryID: "d-1", Event: webhook.EventWorkflowJobWaiting, Action: webhook.ActionNewJobAttempt,
		Job: webhook.Job{
			ID: 42, RunID: 9, Attempt: 2, Handle: "h-42", RunsOn: []string{"docker", "amd64"},
			Status: "waiting", RepoID: 7, OwnerID: 3, Name: "build",
		},
		Repository: "acme/app", Owner: "acme", Received: fixedNow,
	}
	if fmt.Sprintf("%+v", got[0]) != fmt.Sprintf("%+v", want) {
		t.Errorf("event\n got %+v\nwant %+v", got[0], want)
	}
	if e.obs.count(webhook.ResultAccepted) != 1 {
		t.Errorf("accepted count %d, want 1", e.obs.count(webhook.ResultAccepted))
	}
}

func TestRejections(t *testing.T) {
	valid := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	ev := webhook.EventWorkflowJobWaiting
	withSig := func(header, value string) map[string]string {
		return map[string]string{"X-Forgejo-Event": ev, "X-Forgejo-Delivery": "d", header: value}
	}
	failingSource := webhook.SecretSourceFunc(func(context.Context, string) ([]webhook.Secret, error) {
		return nil, errors.New("informer not synced")
	})
	emptySource := webhook.StaticSecrets{nil, []byte{}}

	cases := []struct {
		name    string
		source  webhook.SecretSource
		d       delivery
		status  int
		result  webhook.Result
		headers map[string]string
	}{
		{name: "GET", d: delivery{method: http.MethodGet}, status: http.StatusMethodNotAllowed,
			result: webhook.ResultMethodNotAllowed, headers: map[string]string{"Allow": http.MethodPost}},
		{name: "PUT signed", d: delivery{method: http.MethodPut, body: valid, headers: forgejoHeaders(secret, "d", ev, valid)},
			status: http.StatusMethodNotAllowed, result: webhook.ResultMethodNotAllowed},
		{name: "no signature headers", d: delivery{body: valid, headers: map[string]string{"X-Forgejo-Event": ev}},
			status: http.StatusUnauthorized, result: webhook.ResultMissingSignature},
		{name: "empty signatures as from a hook without secret", d: delivery{body: valid, headers: forgejoHeaders(secret, "d", ev, valid)},
			status: http.StatusUnauthorized, result: webhook.ResultMissingSignature},
		{name: "wrong secret", d: delivery{body: valid, headers: forgejoHeaders("other", "d", ev, valid)},
			status: http.StatusUnauthorized, result: webhook.ResultBadSignature},
		{name: "tampered body", d: delivery{body: append(slices.Clone(valid), ' '), headers: forgejoHeaders(secret, "d", ev, valid)},
			status: http.StatusUnauthorized, result: webhook.ResultBadSignature},
		{name: "signature not hex", d: delivery{body: valid, headers: withSig("X-Forgejo-Signature", "zz"+sign(secret, valid)[2:])},
			status: http.StatusUnauthorized, result: webhook.ResultBadSignature},
		{name: "signature truncated", d: delivery{body: valid, headers: withSig("X-Forgejo-Signature", sign(secret, valid)[:32])},
			status: http.StatusUnauthorized, result: webhook.ResultBadSignature},
		{name: "sha1 in the sha256 header", d: delivery{body: valid, headers: withSig("X-Hub-Signature-256", "sha1="+sign(secret, valid))},
			status: http.StatusUnauthorized, result: webhook.ResultBadSignature},
		{name: "no candidate secret", source: emptySource, d: delivery{body: valid, headers: forgejoHeaders(secret, "d", ev, valid)},
			status: http.StatusUnauthorized, result: webhook.ResultNoSecret},
		{name: "secret lookup fails", source: failingSource, d: delivery{body: valid, headers: forgejoHeaders(secret, "d", ev, valid)},
			status: http.StatusServiceUnavailable, result: webhook.ResultSecretError},
		{name: "malformed JSON", d: delivery{body: []byte(`{"action":`), headers: forgejoHeaders(secret, "d", ev, []byte(`{"action":`))},
			status: http.StatusBadRequest, result: webhook.ResultBadJSON},
		{name: "malformed JSON of an ignored event", d: delivery{body: []byte(`nope`), headers: forgejoHeaders(secret, "d", "push", []byte(`nope`))},
			status: http.StatusBadRequest, result: webhook.ResultBadJSON},
		{name: "no job", d: delivery{body: []byte(`{"action":"new_job_attempt"}`), headers: forgejoHeaders(secret, "d", ev, []byte(`{"action":"new_job_attempt"}`))},
			status: http.StatusBadRequest, result: webhook.ResultBadPayload},
		{name: "job of the wrong type", d: delivery{body: []byte(`{"job":"42"}`), headers: forgejoHeaders(secret, "d", ev, []byte(`{"job":"42"}`))},
			status: http.StatusBadRequest, result: webhook.ResultBadPayload},
		{name: "JSON array", d: delivery{body: []byte(`[]`), headers: forgejoHeaders(secret, "d", ev, []byte(`[]`))},
			status: http.StatusBadRequest, result: webhook.ResultBadPayload},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(o *webhook.Options) {
				if c.source != nil {
					o.Secrets = c.source
				}
			})
			if c.name == "empty signatures as from a hook without secret" {
				for k := range c.d.headers {
					if strings.HasSuffix(k, "Signature") {
						c.d.headers[k] = ""
					}
				}
				c.d.headers["X-Hub-Signature-256"] = "sha256="
			}
			rec := e.send(t, c.d)
			expectStatus(t, rec, c.status)
			if got := strings.TrimSpace(rec.Body.String()); got != string(c.result) {
				t.Errorf("body %q, want %q", got, c.result)
			}
			if n := e.obs.count(c.result); n != 1 {
				t.Errorf("result %s counted %d times, want 1 (all: %v)", c.result, n, e.obs.n)
			}
			if got := e.snk.got(); len(got) != 0 {
				t.Errorf("sink got %d events from a rejected delivery", len(got))
			}
			for k, v := range c.headers {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestSignatureHeaderVariants(t *testing.T) {
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	sig := sign(secret, body)
	cases := map[string]map[string]string{
		"X-Forgejo-Signature":                {"X-Forgejo-Signature": sig},
		"X-Gitea-Signature":                  {"X-Gitea-Signature": sig},
		"X-Hub-Signature-256":                {"X-Hub-Signature-256": "sha256=" + sig},
		"upper-case hex":                     {"X-Forgejo-Signature": strings.ToUpper(sig)},
		"empty Forgejo header, Hub header":   {"X-Forgejo-Signature": "", "X-Hub-Signature-256": "sha256=" + sig},
		"prefixed value in Forgejo's header": {"X-Forgejo-Signature": "sha256=" + sig},
	}
	for name, headers := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			headers["X-Forgejo-Event"] = webhook.EventWorkflowJobWaiting
			headers["X-Forgejo-Delivery"] = "d-1"
			expectStatus(t, e.send(t, delivery{body: body, headers: headers}), http.StatusAccepted)
			if len(e.snk.got()) != 1 {
				t.Fatal("sink not called")
			}
		})
	}
}

func TestSecondCandidateSecretMatches(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) {
		o.Secrets = webhook.StaticSecrets{[]byte("pool-a"), nil, []byte("operator-wide")}
	})
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("operator-wide", "d", webhook.EventWorkflowJobWaiting, body)}),
		http.StatusAccepted)
}

func TestEventHeaderForms(t *testing.T) {
	cases := []struct {
		name      string
		headers   map[string]string
		status    string
		wantEvent string
	}{
		{"X-Forgejo-Event-Type", map[string]string{"X-Forgejo-Event-Type": "workflow_job_running"}, "running", "workflow_job_running"},
		{"X-Forgejo-Event", map[string]string{"X-Forgejo-Event": "workflow_job_success"}, "success", "workflow_job_success"},
		{"X-Gitea-Event", map[string]string{"X-Gitea-Event": "workflow_job_cancelled"}, "cancelled", "workflow_job_cancelled"},
		{"X-Gitea-Event-Type", map[string]string{"X-Gitea-Event-Type": "workflow_job_blocked"}, "blocked", "workflow_job_blocked"},
		{"Event-Type wins", map[string]string{"X-Forgejo-Event-Type": "workflow_job_failure", "X-Forgejo-Event": "workflow_job"}, "failure", "workflow_job_failure"},
		{"bare workflow_job takes the payload's status", map[string]string{"X-Forgejo-Event": "workflow_job"}, "waiting", "workflow_job_waiting"},
		{"bare workflow_job, skipped", map[string]string{"X-Gitea-Event": "workflow_job"}, "skipped", "workflow_job_skipped"},
		// The header and the status disagree: both are passed on as they came.
		{"header and status disagree", map[string]string{"X-Forgejo-Event": "workflow_job_waiting"}, "running", "workflow_job_waiting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			body := jobPayload(t, webhook.ActionJobStatusChanged, c.status)
			c.headers["X-Forgejo-Signature"] = sign(secret, body)
			c.headers["X-Forgejo-Delivery"] = "d"
			expectStatus(t, e.send(t, delivery{body: body, headers: c.headers}), http.StatusAccepted)
			got := e.snk.got()
			if len(got) != 1 || got[0].Event != c.wantEvent || got[0].Job.Status != c.status {
				t.Fatalf("events %+v, want one %s with status %s", got, c.wantEvent, c.status)
			}
		})
	}
}

func TestIgnoredEvents(t *testing.T) {
	// Not job events, and the payload names no repository: nothing to poll.
	for _, body := range []string{`{"ref":"refs/heads/main"}`, `{"repository":null,"package":{"id":1}}`,
		`{"repository":{"full_name":"no-slash"}}`, `{"repository":{"full_name":"a/b/c"}}`, `{"run":{"repository":null}}`,
		`{"repository":"acme/app"}`, `[]`} {
		t.Run(body, func(t *testing.T) {
			e := newEnv(t)
			b := []byte(body)
			expectStatus(t, e.send(t, delivery{body: b, headers: forgejoHeaders(secret, "d", "package", b)}), http.StatusOK)
			if e.obs.count(webhook.ResultIgnoredEvent) != 1 || len(e.snk.got()) != 0 || len(e.snk.gotRepos()) != 0 {
				t.Fatalf("want ignored, got results %v, %d job and %d repository events", e.obs.n, len(e.snk.got()), len(e.snk.gotRepos()))
			}
		})
	}
	// Event names that are not job events: a job payload with them is a repository event.
	for _, event := range []string{"workflow_run_success", "workflow_job_unknown", "workflow_jobs", "WORKFLOW_JOB_WAITING", ""} {
		t.Run(event, func(t *testing.T) {
			e := newEnv(t)
			body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
			expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", event, body)}), http.StatusAccepted)
			if got := e.snk.gotRepos(); len(e.snk.got()) != 0 || len(got) != 1 || got[0].Repository != "acme/app" {
				t.Fatalf("want one repository event for acme/app, got %d job events and %+v", len(e.snk.got()), got)
			}
		})
	}
	t.Run("bare workflow_job with an unknown status", func(t *testing.T) {
		e := newEnv(t)
		body := jobPayload(t, webhook.ActionNewJobAttempt, "unknown")
		expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", "workflow_job", body)}), http.StatusOK)
		if e.obs.count(webhook.ResultIgnoredEvent) != 1 || len(e.snk.got()) != 0 {
			t.Fatalf("want ignored, got results %v and %d events", e.obs.n, len(e.snk.got()))
		}
	})
	t.Run("push payload that is no job payload", func(t *testing.T) {
		e := newEnv(t)
		body := []byte(`{"ref":"refs/heads/main","job":["not","a","job"]}`)
		expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", "push", body)}), http.StatusOK)
	})
}

// repositoryPayload is the repository object of Forgejo's payloads (modules/structs/repo.go
// Repository), trimmed to a few of its fields.
const repositoryJSON = `{"id": 7, "owner": {"id": 3, "login": "acme", "username": "acme"}, "name": "app",
  "full_name": "acme/app", "html_url": "https://forgejo.example/acme/app", "default_branch": "main"}`

// Bodies as Forgejo v15.0.3 shapes them (modules/structs/hook.go), abridged.
var forgejo15Deliveries = map[string]string{
	"push": `{"ref": "refs/heads/main", "before": "0000", "after": "abcd", "compare_url": "", "commits": [],
  "total_commits": 0, "head_commit": null, "repository": ` + repositoryJSON + `, "pusher": {"id": 3}, "sender": {"id": 3}}`,
	"pull_request_sync": `{"action": "synchronized", "number": 4, "pull_request": {"id": 11}, "repository": ` + repositoryJSON + `, "sender": {"id": 3}}`,
	"pull_request":      `{"action": "opened", "number": 4, "pull_request": {"id": 11}, "repository": ` + repositoryJSON + `, "sender": {"id": 3}}`,
	"create":            `{"sha": "abcd", "ref": "v1.0.0", "ref_type": "tag", "repository": ` + repositoryJSON + `, "sender": {"id": 3}}`,
	"release":           `{"action": "published", "release": {"id": 2}, "repository": ` + repositoryJSON + `, "sender": {"id": 3}}`,
	"issues":            `{"action": "opened", "number": 5, "issue": {"id": 21}, "repository": ` + repositoryJSON + `, "sender": {"id": 3}}`,
	"issue_comment":     `{"action": "created", "issue": {"id": 21}, "comment": {"id": 8}, "repository": ` + repositoryJSON + `, "sender": {"id": 3}, "is_pull": false}`,
	"pull_request_review_approved": `{"action": "reviewed", "number": 4, "pull_request": {"id": 11}, "repository": ` + repositoryJSON +
		`, "sender": {"id": 3}, "review": {"type": "pull_request_review_approved", "content": ""}}`,
	// ActionPayload carries the repository inside the run.
	"action_run_success": `{"action": "success", "run": {"id": 9, "title": "ci", "repository": ` + repositoryJSON +
		`, "status": "success"}, "prior_status": "running"}`,
	"action_run_failure": `{"action": "failure", "run": {"id": 9, "repository": ` + repositoryJSON + `, "status": "failure"}, "prior_status": "running"}`,
}

func TestRepositoryEventsAskForAPoll(t *testing.T) {
	for event, body := range forgejo15Deliveries {
		t.Run(event, func(t *testing.T) {
			e := newEnv(t)
			b := []byte(body)
			expectStatus(t, e.send(t, delivery{body: b, headers: forgejoHeaders(secret, "d-"+event, event, b)}), http.StatusAccepted)
			want := []webhook.RepositoryEvent{{DeliveryID: "d-" + event, Event: event, Repository: "acme/app", RepoID: 7, OwnerID: 3, Received: fixedNow}}
			if got := e.snk.gotRepos(); !slices.Equal(got, want) || len(e.snk.got()) != 0 {
				t.Fatalf("repository events %+v, job events %d; want %+v", got, len(e.snk.got()), want)
			}
			if e.obs.count(webhook.ResultAccepted) != 1 {
				t.Errorf("results %v, want one accepted", e.obs.n)
			}
			// The same delivery again asks for nothing more.
			expectStatus(t, e.send(t, delivery{body: b, headers: forgejoHeaders(secret, "d-"+event, event, b)}), http.StatusOK)
			if len(e.snk.gotRepos()) != 1 || e.obs.count(webhook.ResultDuplicate) != 1 {
				t.Fatalf("a repeated delivery reached the sink: %+v, results %v", e.snk.gotRepos(), e.obs.n)
			}
		})
	}
}

func TestUnverifiedRepositoryEventsTriggerNothing(t *testing.T) {
	body := []byte(forgejo15Deliveries["push"])
	for name, headers := range map[string]map[string]string{
		"unsigned":     {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "d"},
		"empty sha256": {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "d", "X-Hub-Signature-256": "sha256="},
		"wrong secret": forgejoHeaders("not-the-secret", "d", "push", body),
		"other body":   forgejoHeaders(secret, "d", "push", []byte(forgejo15Deliveries["create"])),
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			expectStatus(t, e.send(t, delivery{body: body, headers: headers}), http.StatusUnauthorized)
			if len(e.snk.gotRepos()) != 0 || len(e.snk.got()) != 0 {
				t.Fatalf("an unverified delivery reached the sink")
			}
		})
	}
}

func TestReplayIsDeduplicated(t *testing.T) {
	e := newEnv(t)
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	h := forgejoHeaders(secret, "same-id", webhook.EventWorkflowJobWaiting, body)
	expectStatus(t, e.send(t, delivery{body: body, headers: h}), http.StatusAccepted)
	rec := e.send(t, delivery{body: body, headers: h})
	expectStatus(t, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != string(webhook.ResultDuplicate) {
		t.Errorf("body %q, want duplicate", got)
	}
	// Only X-Gitea-Delivery, as a Gitea-style sender would send it: same id, same delivery.
	giteaOnly := map[string]string{"X-Gitea-Delivery": "same-id", "X-Gitea-Event": webhook.EventWorkflowJobWaiting,
		"X-Gitea-Signature": sign(secret, body)}
	expectStatus(t, e.send(t, delivery{body: body, headers: giteaOnly}), http.StatusOK)
	// The same id on another body signed with the same secret: Forgejo never does that.
	other := jobPayload(t, webhook.ActionJobStatusChanged, "running")
	expectStatus(t, e.send(t, delivery{body: other, headers: forgejoHeaders(secret, "same-id", webhook.EventWorkflowJobRunning, other)}),
		http.StatusOK)
	if n := len(e.snk.got()); n != 1 {
		t.Errorf("sink got %d events, want 1", n)
	}
	if e.obs.count(webhook.ResultDuplicate) != 3 {
		t.Errorf("duplicates %d, want 3", e.obs.count(webhook.ResultDuplicate))
	}
}

// The delivery id is not signed: a captured body sent again under a fresh id, or with none, or
// under another event name, is the same delivery.
func TestReplayedBodyUnderANewDeliveryIDIsDeduplicated(t *testing.T) {
	e := newEnv(t)
	body := []byte(forgejo15Deliveries["push"])
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "original", "push", body)}), http.StatusAccepted)
	for name, headers := range map[string]map[string]string{
		"new id":        forgejoHeaders(secret, "fresh-id", "push", body),
		"no id":         {"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(secret, body)},
		"other event":   forgejoHeaders(secret, "fresh-id-2", "create", body),
		"hub signature": {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "fresh-id-3", "X-Hub-Signature-256": "sha256=" + strings.ToUpper(sign(secret, body))},
	} {
		rec := e.send(t, delivery{body: body, headers: headers})
		if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != string(webhook.ResultDuplicate) {
			t.Errorf("%s: status %d %q, want 200 duplicate", name, rec.Code, strings.TrimSpace(rec.Body.String()))
		}
	}
	if n := len(e.snk.gotRepos()); n != 1 {
		t.Errorf("sink got %d events from one body, want 1", n)
	}
}

// The same body verified by another secret is another hook's delivery, and acts within that
// secret's grant: it is not a replay of the first.
func TestSameBodyUnderAnotherSecretIsNotAReplay(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) {
		o.Secrets = webhook.SecretSourceFunc(func(context.Context, string) ([]webhook.Secret, error) {
			return []webhook.Secret{{Value: []byte("org-hook"), Grant: "org"}, {Value: []byte("repo-hook"), Grant: "repo"}}, nil
		})
	})
	body := []byte(forgejo15Deliveries["push"])
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("org-hook", "d-org", "push", body)}), http.StatusAccepted)
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("repo-hook", "d-repo", "push", body)}), http.StatusAccepted)
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("repo-hook", "d-repo-again", "push", body)}), http.StatusOK)
	got := e.snk.gotRepos()
	if len(got) != 2 || got[0].Grant != "org" || got[1].Grant != "repo" {
		t.Fatalf("events %+v, want one under each secret's grant", got)
	}
}

// A body is remembered for the replay window, on the handler's clock, and then forgotten.
func TestReplayWindow(t *testing.T) {
	now := fixedNow
	e := newEnv(t, func(o *webhook.Options) {
		o.ReplayWindow = 10 * time.Minute
		o.Now = func() time.Time { return now }
	})
	body := []byte(forgejo15Deliveries["push"])
	send := func(id string) int {
		return e.send(t, delivery{body: body, headers: forgejoHeaders(secret, id, "push", body)}).Code
	}
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d-0", "push", body)}), http.StatusAccepted)
	now = now.Add(10*time.Minute - time.Nanosecond)
	if code := send("d-1"); code != http.StatusOK {
		t.Errorf("just inside the window: %d, want 200 duplicate", code)
	}
	now = now.Add(time.Nanosecond)
	if code := send("d-2"); code != http.StatusAccepted {
		t.Errorf("at the window's end: %d, want 202", code)
	}
}

func TestReplayConcurrent(t *testing.T) {
	e := newEnv(t)
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	h := forgejoHeaders(secret, "racy", webhook.EventWorkflowJobWaiting, body)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			e.h.ServeHTTP(httptest.NewRecorder(), req)
		})
	}
	wg.Wait()
	if n := len(e.snk.got()); n != 1 {
		t.Fatalf("sink got %d events from one delivery id, want 1", n)
	}
}

func TestDedupeMemoryIsBounded(t *testing.T) {
	e := newEnv(t, func(o *webhook.Options) { o.DedupeSize = 2 })
	bodies := map[string][]byte{}
	send := func(id string) int {
		if bodies[id] == nil {
			bodies[id] = jobPayload(t, webhook.ActionNewJobAttempt, "waiting", func(p *forgejosim.WorkflowJobPayload) { p.Job.Handle = "h-" + id })
		}
		return e.send(t, delivery{body: bodies[id], headers: forgejoHeaders(secret, id, webhook.EventWorkflowJobWaiting, bodies[id])}).Code
	}
	for _, id := range []string{"a", "b", "c"} {
		if code := send(id); code != http.StatusAccepted {
			t.Fatalf("first %s: %d", id, code)
		}
	}
	if code := send("c"); code != http.StatusOK {
		t.Errorf("c again: %d, want 200 (remembered)", code)
	}
	// "a" was the oldest of three with room for two: forgotten, so accepted again.
	if code := send("a"); code != http.StatusAccepted {
		t.Errorf("a again: %d, want 202 (forgotten)", code)
	}
}

// Without a delivery id the body still identifies the delivery.
func TestNoDeliveryIDIsDeduplicatedByBody(t *testing.T) {
	e := newEnv(t)
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	h := map[string]string{"X-Forgejo-Event": webhook.EventWorkflowJobWaiting, "X-Forgejo-Signature": sign(secret, body)}
	expectStatus(t, e.send(t, delivery{body: body, headers: h}), http.StatusAccepted)
	expectStatus(t, e.send(t, delivery{body: body, headers: h}), http.StatusOK)
}

// padded returns a signed job payload of exactly n bytes; JSON allows trailing whitespace.
func padded(t *testing.T, n int) []byte {
	t.Helper()
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	if len(body) > n {
		t.Fatalf("payload of %d bytes does not fit in %d", len(body), n)
	}
	return append(body, bytes.Repeat([]byte{' '}, n-len(body))...)
}

func TestBodyLimit(t *testing.T) {
	const mib = 1 << 20
	for _, streamed := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamed=%v", streamed), func(t *testing.T) {
			e := newEnv(t)
			send := func(body []byte, id string) *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
				if streamed {
					// Unknown length, as with chunked encoding: only the read limit applies.
					req.ContentLength = -1
				}
				for k, v := range forgejoHeaders(secret, id, webhook.EventWorkflowJobWaiting, body) {
					req.Header.Set(k, v)
				}
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				return rec
			}
			expectStatus(t, send(padded(t, mib), "at-limit"), http.StatusAccepted)
			expectStatus(t, send(padded(t, mib+1), "over-limit"), http.StatusRequestEntityTooLarge)
			if e.obs.count(webhook.ResultTooLarge) != 1 {
				t.Errorf("too_large counted %d times", e.obs.count(webhook.ResultTooLarge))
			}
		})
	}
	t.Run("custom limit", func(t *testing.T) {
		e := newEnv(t, func(o *webhook.Options) { o.MaxBodyBytes = 100 })
		body := []byte(strings.Repeat(" ", 101))
		expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", "push", body)}), http.StatusRequestEntityTooLarge)
	})
}

func TestOutOfOrderPassedThrough(t *testing.T) {
	e := newEnv(t)
	running := jobPayload(t, webhook.ActionJobStatusChanged, "running")
	waiting := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	expectStatus(t, e.send(t, delivery{body: running, headers: forgejoHeaders(secret, "d-2", webhook.EventWorkflowJobRunning, running)}),
		http.StatusAccepted)
	expectStatus(t, e.send(t, delivery{body: waiting, headers: forgejoHeaders(secret, "d-1", webhook.EventWorkflowJobWaiting, waiting)}),
		http.StatusAccepted)
	got := e.snk.got()
	if len(got) != 2 || got[0].Event != webhook.EventWorkflowJobRunning || got[1].Event != webhook.EventWorkflowJobWaiting ||
		got[0].Action != webhook.ActionJobStatusChanged || got[1].Action != webhook.ActionNewJobAttempt {
		t.Fatalf("events %+v, want running then waiting as sent", got)
	}
}

func TestPayloadWithoutRepository(t *testing.T) {
	var hints []string
	e := newEnv(t, func(o *webhook.Options) {
		o.Secrets = webhook.SecretSourceFunc(func(_ context.Context, repo string) ([]webhook.Secret, error) {
			hints = append(hints, repo)
			return []webhook.Secret{{Value: []byte(secret)}}, nil
		})
	})
	body := jobPayload(t, webhook.ActionJobCompleted, "success", func(p *forgejosim.WorkflowJobPayload) { p.Repository = nil })
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", webhook.EventWorkflowJobSuccess, body)}),
		http.StatusAccepted)
	got := e.snk.got()
	if len(got) != 1 || got[0].Repository != "" || got[0].Owner != "" || got[0].Job.RepoID != 7 || got[0].Job.OwnerID != 3 {
		t.Fatalf("events %+v, want one without repository but with repo_id 7", got)
	}
	if !slices.Equal(hints, []string{""}) {
		t.Errorf("secret source asked for %q, want everything (\"\")", hints)
	}
}

func TestSecretCandidatesByRepository(t *testing.T) {
	// Each repository has its own secret; the body's (unverified) repository picks which to try.
	bySource := map[string]string{"acme/app": "app-secret", "evil/x": "evil-secret"}
	var hints []string
	e := newEnv(t, func(o *webhook.Options) {
		o.Secrets = webhook.SecretSourceFunc(func(_ context.Context, repo string) ([]webhook.Secret, error) {
			hints = append(hints, repo)
			if s, ok := bySource[repo]; ok {
				return []webhook.Secret{{Value: []byte(s)}}, nil
			}
			return nil, nil
		})
	})
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("app-secret", "d1", webhook.EventWorkflowJobWaiting, body)}),
		http.StatusAccepted)
	// A sender who knows evil/x's secret cannot pass a payload naming acme/app.
	expectStatus(t, e.send(t, delivery{body: body, headers: forgejoHeaders("evil-secret", "d2", webhook.EventWorkflowJobWaiting, body)}),
		http.StatusUnauthorized)
	// A repository the source does not know has no candidates.
	other := jobPayload(t, webhook.ActionNewJobAttempt, "waiting", func(p *forgejosim.WorkflowJobPayload) {
		p.Repository = &forgejosim.APIRepository{FullName: "acme/unknown"}
	})
	rec := e.send(t, delivery{body: other, headers: forgejoHeaders("app-secret", "d3", webhook.EventWorkflowJobWaiting, other)})
	expectStatus(t, rec, http.StatusUnauthorized)
	if strings.TrimSpace(rec.Body.String()) != string(webhook.ResultNoSecret) {
		t.Errorf("body %q, want no_secret", rec.Body.String())
	}
	// Names no Forgejo repository can have are not passed on.
	for _, name := range []string{"a/b/c", "noslash", "/x", "x/", "a/b\nc", strings.Repeat("a", 300) + "/b"} {
		odd := jobPayload(t, webhook.ActionNewJobAttempt, "waiting", func(p *forgejosim.WorkflowJobPayload) {
			p.Repository = &forgejosim.APIRepository{FullName: name}
		})
		e.send(t, delivery{body: odd, headers: forgejoHeaders("app-secret", "d4", webhook.EventWorkflowJobWaiting, odd)})
	}
	want := []string{"acme/app", "acme/app", "acme/unknown", "", "", "", "", "", ""}
	if !slices.Equal(hints, want) {
		t.Errorf("hints %q, want %q", hints, want)
	}
}

func TestLogsHoldNoSecretOrBody(t *testing.T) {
	var lines []string
	logger := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{Verbosity: 10})
	e := newEnv(t, func(o *webhook.Options) { o.Log = logger })
	const marker = "BODY-MARKER-7f3a"
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting", func(p *forgejosim.WorkflowJobPayload) {
		p.Job.Name = marker
		p.Repository.FullName = "acme/" + marker
	})
	nasty := "id-\x1b[31m\nfake log line " + strings.Repeat("x", 200)
	// Unverified: nothing from it but the sanitized delivery id may be logged.
	e.send(t, delivery{body: body, headers: forgejoHeaders("wrong", nasty, "push-"+marker, body)})
	// Verified and accepted.
	e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "good-id", webhook.EventWorkflowJobWaiting, body)})
	if len(lines) != 2 {
		t.Fatalf("log lines %q, want 2", lines)
	}
	for _, l := range lines {
		for _, bad := range []string{marker, secret, "\x1b", "fake log line " + strings.Repeat("x", 100)} {
			if strings.Contains(l, bad) {
				t.Errorf("log line %q contains %q", l, bad)
			}
		}
	}
	if !strings.Contains(lines[0], `id-?[31m?fake`) || !strings.Contains(lines[1], "good-id") {
		t.Errorf("log lines %q lack the sanitized delivery ids", lines)
	}
}

func TestNewRequiresSourceAndSink(t *testing.T) {
	if _, err := webhook.New(webhook.Options{Sink: &sink{}}); err == nil {
		t.Error("no secret source accepted")
	}
	if _, err := webhook.New(webhook.Options{Secrets: webhook.StaticSecrets{}}); err == nil {
		t.Error("no sink accepted")
	}
	if _, err := webhook.New(webhook.Options{Secrets: webhook.StaticSecrets{}, Sink: &sink{}, MaxBodyBytes: -1}); err == nil {
		t.Error("negative body limit accepted")
	}
}

func TestPrometheusObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs, err := webhook.NewPrometheusObserver(reg)
	if err != nil {
		t.Fatalf("new observer: %v", err)
	}
	// A second observer on the same registry shares the counter instead of failing.
	obs2, err := webhook.NewPrometheusObserver(reg)
	if err != nil {
		t.Fatalf("second observer: %v", err)
	}
	e := newEnv(t, func(o *webhook.Options) { o.Observer = obs })
	e2 := newEnv(t, func(o *webhook.Options) { o.Observer = obs2 })
	body := jobPayload(t, webhook.ActionNewJobAttempt, "waiting")
	e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", webhook.EventWorkflowJobWaiting, body)})
	e.send(t, delivery{body: body, headers: forgejoHeaders(secret, "d", webhook.EventWorkflowJobWaiting, body)})
	e2.send(t, delivery{body: body, headers: forgejoHeaders("wrong", "d", webhook.EventWorkflowJobWaiting, body)})
	e2.send(t, delivery{method: http.MethodGet})

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != webhook.MetricDeliveriesTotal {
			continue
		}
		for _, m := range f.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{}
	for _, r := range webhook.Results {
		want[string(r)] = 0
	}
	want["accepted"], want["duplicate"], want["bad_signature"], want["method_not_allowed"] = 1, 1, 1, 1
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", counts, want)
	}

	// A different collector under the same name is a real conflict.
	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: webhook.MetricDeliveriesTotal, Help: "other"}))
	if _, err := webhook.NewPrometheusObserver(clash); err == nil {
		t.Error("conflicting registration accepted")
	}
}
