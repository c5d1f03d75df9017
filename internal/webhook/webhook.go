// Package webhook receives Forgejo webhook deliveries and hands the verified ones to a sink. It
// does HTTP and nothing else: which pools a delivery concerns, and what to do about it, is the
// caller's business.
//
// Forgejo 15 sends no webhook when a job is queued, starts or ends (modules/webhook/type.go at
// v15.0.3 has no workflow_job events): it sends push, pull_request, release, action_run_* and
// the like, each naming its repository. Such a delivery is a repository event: a cue that jobs
// of that repository may be waiting, so the caller polls the scopes that cover it. A
// workflow_job delivery (Gitea 1.24+, or a later Forgejo) carries the job itself and is a job
// event, given to the sink as such.
//
// A delivery passes these checks in order, and the first that fails decides the answer: the
// sender's allowance of unverified deliveries (429), method (405), body size (413), presence of
// a signature (401), the signature against each candidate secret (401), JSON syntax (400), event
// type and payload (a delivery that is neither a job event nor names a repository is
// acknowledged and ignored; a job event without a job is 400), the same body or delivery id
// already seen under the same secret within the replay window (200, ignored). Only then is the
// sink called, with the grant of the secret that verified the delivery, and the answer is 202.
package webhook

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
)

// DefaultMaxBodyBytes bounds a delivery's body. Forgejo's job payloads are a few KiB.
const DefaultMaxBodyBytes = 1 << 20

// DefaultDedupeSize is how many verified deliveries are remembered to drop replays; see
// dedupe.go for why it and DefaultReplayWindow are what they are.
const DefaultDedupeSize = 20000

// maxDeliveryIDLogLen bounds the delivery id as it appears in logs; Forgejo's are UUIDs (36).
const maxDeliveryIDLogLen = 64

// maxRepoHintLen bounds the unverified repository name passed to SecretSource. Forgejo caps
// owner and repository names at 40 and 100 characters.
const maxRepoHintLen = 256

// Job event names (Forgejo's modules/webhook/type.go); X-Forgejo-Event and X-Forgejo-Event-Type
// carry them in full.
const (
	EventWorkflowJobWaiting   = "workflow_job_waiting"
	EventWorkflowJobRunning   = "workflow_job_running"
	EventWorkflowJobSuccess   = "workflow_job_success"
	EventWorkflowJobFailure   = "workflow_job_failure"
	EventWorkflowJobCancelled = "workflow_job_cancelled"
	EventWorkflowJobSkipped   = "workflow_job_skipped"
	EventWorkflowJobBlocked   = "workflow_job_blocked"
)

// Payload actions (Forgejo's HookWorkflowJobAction).
const (
	ActionNewJobAttempt    = "new_job_attempt"
	ActionJobStatusChanged = "job_status_changed"
	ActionJobCompleted     = "job_completed"
)

// eventPrefix is shared by every job event; bareJobEvent is GitHub's and some proxies' form,
// where the status must be read from the payload.
const (
	bareJobEvent = "workflow_job"
	eventPrefix  = bareJobEvent + "_"
)

var jobStatuses = map[string]bool{
	"waiting": true, "running": true, "success": true, "failure": true,
	"cancelled": true, "skipped": true, "blocked": true,
}

// RepositoryEvent is a verified delivery of any other event that names a repository: push,
// pull_request*, create, release, issues, issue_comment, the review events, action_run_* and so
// on. Forgejo inserts a run's jobs while it handles the event that starts the run, just after it
// queued the delivery, so jobs of the repository may be waiting, or be about to.
type RepositoryEvent struct {
	// DeliveryID is X-Forgejo-Delivery (or X-Gitea-Delivery); "" if the sender sent none.
	DeliveryID string
	// Event is the full event type (X-Forgejo-Event-Type), e.g. push or pull_request_sync,
	// bounded and made printable with SafeID.
	Event string
	// Repository is the repository's "owner/name".
	Repository string
	// RepoID and OwnerID are the repository's and its owner's ids; 0 when the payload has none.
	RepoID  int64
	OwnerID int64
	// Received is when the handler accepted the delivery (Options.Now).
	Received time.Time
	// Grant is the Grant of the secret that verified the delivery, as the SecretSource gave
	// it: the sink acts within it and nowhere else.
	Grant any
}

// JobEvent is a verified job webhook delivery.
type JobEvent struct {
	// DeliveryID is X-Forgejo-Delivery (or X-Gitea-Delivery); it may be empty if the sender
	// sent none, in which case the delivery was not deduplicated.
	DeliveryID string
	// Event is the full event name, e.g. workflow_job_waiting, also when the header carried the
	// bare workflow_job form.
	Event string
	// Action is the payload's action: new_job_attempt, job_status_changed or job_completed.
	Action string
	Job    Job
	// Repository is the repository's "owner/name", "" when the payload has none (older Forgejo
	// releases); Job.RepoID identifies it then.
	Repository string
	// Owner is the repository owner's login, "" when unknown.
	Owner string
	// Received is when the handler accepted the delivery (Options.Now).
	Received time.Time
	// Grant is the Grant of the secret that verified the delivery (see RepositoryEvent).
	Grant any
}

// Job is the payload's job (Forgejo's ActionRunJob), reduced to what the operator uses.
type Job struct {
	ID      int64
	RunID   int64
	Attempt int64
	// Handle is empty for jobs created before Forgejo 15.
	Handle  string
	RunsOn  []string
	Status  string
	RepoID  int64
	OwnerID int64
	Name    string
	TaskID  int64
}

// Secret is one secret a delivery may be signed with, and what a delivery it verifies may make
// happen.
type Secret struct {
	// Value is the HMAC key. An empty one is skipped: an HMAC keyed with nothing authenticates
	// nobody.
	Value []byte
	// Grant is handed, untouched, to the sink with every delivery Value verifies, so that the
	// sink acts only for whoever holds Value. The handler never looks inside it.
	Grant any
}

// SecretSource gives the secrets a delivery may be signed with.
type SecretSource interface {
	// Candidates returns the secrets to try, in order; the first that verifies the delivery
	// decides its Grant. repoFullName is the "owner/name" the body claims, or "" when the body
	// names none or names it oddly; it is NOT verified (the secret to verify it with is what is
	// being looked up), so it may only narrow the lookup, never grant anything by itself. With
	// "" the source should return every secret it knows, with grants that cover no repository
	// in particular. An error answers 503 and is logged, so it should not quote repoFullName:
	// the log holds nothing unverified but the delivery id.
	Candidates(ctx context.Context, repoFullName string) ([]Secret, error)
}

// SecretSourceFunc adapts a function to SecretSource.
type SecretSourceFunc func(ctx context.Context, repoFullName string) ([]Secret, error)

// Candidates calls f.
func (f SecretSourceFunc) Candidates(ctx context.Context, repoFullName string) ([]Secret, error) {
	return f(ctx, repoFullName)
}

// StaticSecrets is a fixed list of secrets, whatever the repository, each without a grant.
type StaticSecrets [][]byte

// Candidates returns s.
func (s StaticSecrets) Candidates(context.Context, string) ([]Secret, error) {
	out := make([]Secret, len(s))
	for i, v := range s {
		out[i] = Secret{Value: v}
	}
	return out, nil
}

// EventSink receives verified deliveries. It is called synchronously from the HTTP handler, so it
// should only record or enqueue: Forgejo waits for the answer and does not retry a failed
// delivery, and the operator's job poller remains the source of truth either way. Deliveries
// arrive in the order they were received, which need not be the order Forgejo produced them.
type EventSink interface {
	// HandleJobEvent takes a workflow_job delivery (not sent by Forgejo 15).
	HandleJobEvent(ctx context.Context, ev JobEvent)
	// HandleRepositoryEvent takes any other delivery that names a repository.
	HandleRepositoryEvent(ctx context.Context, ev RepositoryEvent)
}

// Result is the outcome of one delivery, the label of the deliveries metric.
type Result string

// Results.
const (
	ResultAccepted         Result = "accepted"           // 202, given to the sink
	ResultDuplicate        Result = "duplicate"          // 200, body or delivery id seen before
	ResultRateLimited      Result = "rate_limited"       // 429, too many unverified deliveries from the source
	ResultIgnoredEvent     Result = "ignored_event"      // 200, names no repository and is no job event
	ResultMethodNotAllowed Result = "method_not_allowed" // 405
	ResultTooLarge         Result = "too_large"          // 413
	ResultReadError        Result = "read_error"         // 400, the body could not be read
	ResultMissingSignature Result = "missing_signature"  // 401
	ResultNoSecret         Result = "no_secret"          // 401, no candidate secret for it
	ResultBadSignature     Result = "bad_signature"      // 401
	ResultSecretError      Result = "secret_error"       // 503, the secret lookup failed
	ResultBadJSON          Result = "bad_json"           // 400, not JSON
	ResultBadPayload       Result = "bad_payload"        // 400, JSON but not a job payload
)

// Results lists every Result, for metrics that want all label values present from the start.
var Results = []Result{
	ResultAccepted, ResultDuplicate, ResultIgnoredEvent, ResultMethodNotAllowed, ResultTooLarge,
	ResultReadError, ResultMissingSignature, ResultNoSecret, ResultBadSignature, ResultSecretError,
	ResultBadJSON, ResultBadPayload, ResultRateLimited,
}

// Observer is told the result of every delivery.
type Observer interface {
	ObserveDelivery(result Result)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(result Result)

// ObserveDelivery calls f.
func (f ObserverFunc) ObserveDelivery(result Result) { f(result) }

// Options configure a Handler.
type Options struct {
	// Secrets gives the candidate secrets; required.
	Secrets SecretSource
	// Sink receives verified job events; required.
	Sink EventSink
	// MaxBodyBytes bounds the body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// DedupeSize is how many verified deliveries are remembered; default DefaultDedupeSize.
	DedupeSize int
	// ReplayWindow is how long a verified delivery's body is remembered; a body verified by the
	// same secret within it is a replay. Default DefaultReplayWindow.
	ReplayWindow time.Duration
	// UnverifiedRate is how many deliveries per second that fail before or at verification
	// each source address may send in the long run, and UnverifiedBurst how many at once;
	// defaults DefaultUnverifiedRate and DefaultUnverifiedBurst. See ratelimit.go.
	UnverifiedRate  float64
	UnverifiedBurst int
	// Observer, when set, is told every delivery's result.
	Observer Observer
	// Log receives one line per delivery, at V(1) for rejections; zero value discards.
	Log logr.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler is the webhook endpoint. It is safe for concurrent use.
type Handler struct {
	secrets  SecretSource
	sink     EventSink
	maxBody  int64
	observer Observer
	log      logr.Logger
	now      func() time.Time
	seen     *dedupe
	limiter  *limiter
	// salt keys the digest that tells secrets apart in the dedupe, so that what it holds says
	// nothing about any secret.
	salt []byte
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Secrets == nil {
		return nil, errors.New("webhook handler: a secret source is required")
	}
	if opts.Sink == nil {
		return nil, errors.New("webhook handler: an event sink is required")
	}
	if opts.MaxBodyBytes < 0 || opts.DedupeSize < 0 || opts.ReplayWindow < 0 || opts.UnverifiedRate < 0 || opts.UnverifiedBurst < 0 {
		return nil, fmt.Errorf("webhook handler: negative limits (max body %d, dedupe size %d, replay window %s, unverified rate %g burst %d)",
			opts.MaxBodyBytes, opts.DedupeSize, opts.ReplayWindow, opts.UnverifiedRate, opts.UnverifiedBurst)
	}
	h := &Handler{
		secrets:  opts.Secrets,
		sink:     opts.Sink,
		maxBody:  opts.MaxBodyBytes,
		observer: opts.Observer,
		log:      opts.Log,
		now:      opts.Now,
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	h.seen = newDedupe(cmp.Or(opts.DedupeSize, DefaultDedupeSize), cmp.Or(opts.ReplayWindow, DefaultReplayWindow))
	h.limiter = newLimiter(cmp.Or(opts.UnverifiedRate, DefaultUnverifiedRate), cmp.Or(opts.UnverifiedBurst, DefaultUnverifiedBurst), maxSources)
	h.salt = make([]byte, 32)
	if _, err := rand.Read(h.salt); err != nil {
		return nil, fmt.Errorf("webhook handler: salt for the replay memory: %w", err)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log.GetSink() == nil {
		h.log = logr.Discard()
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The delivery id is the only request-supplied value that is logged before verification,
	// and only in sanitized form.
	logID := SafeID(firstHeader(r.Header, "X-Forgejo-Delivery", "X-Gitea-Delivery"))
	var (
		res    Result
		status int
		detail string
	)
	// A token is taken before anything else is done, and given back once the delivery proves
	// to be signed: only what fails before or at verification spends the sender's allowance,
	// and a sender that spent it costs no secret lookup and no HMAC until it refills.
	if source, ok := h.limiter.take(sourceKey(r.RemoteAddr), h.now()); !ok {
		res, status, detail = ResultRateLimited, http.StatusTooManyRequests, "unverified deliveries over the source's allowance"
	} else {
		res, status, detail = h.serve(r)
		if verified(res) {
			h.limiter.giveBack(source, h.now())
		}
	}
	if h.observer != nil {
		h.observer.ObserveDelivery(res)
	}
	log := h.log.WithValues("delivery", logID, "result", string(res), "status", status)
	// Only a failing secret lookup is the operator's own trouble; anything else is routine or
	// caused by the sender, and logging it loudly would let anyone flood the log.
	if res == ResultSecretError {
		log.Info("webhook delivery refused: secret lookup failed", "detail", detail)
	} else {
		log.V(1).Info("webhook delivery", "detail", detail)
	}
	if res == ResultMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if res == ResultRateLimited {
		w.Header().Set("Retry-After", h.limiter.retryAfter())
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// The result name lets a Forgejo administrator see in the hook's delivery history why it
	// was refused, without revealing anything the sender does not know.
	_, _ = io.WriteString(w, string(res)+"\n")
}

// serve decides a delivery. detail is for the log and must hold only handler-made text or
// verified values.
func (h *Handler) serve(r *http.Request) (res Result, status int, detail string) {
	if r.Method != http.MethodPost {
		return ResultMethodNotAllowed, http.StatusMethodNotAllowed, ""
	}
	if r.ContentLength > h.maxBody {
		return ResultTooLarge, http.StatusRequestEntityTooLarge, "declared length over the limit"
	}
	// One byte more than the limit tells "exactly at the limit" from "over it" without reading
	// an unbounded body.
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	if err != nil {
		return ResultReadError, http.StatusBadRequest, "reading the body failed"
	}
	if int64(len(body)) > h.maxBody {
		return ResultTooLarge, http.StatusRequestEntityTooLarge, ""
	}

	sig, ok := signature(r.Header)
	if !ok {
		return ResultMissingSignature, http.StatusUnauthorized, ""
	}
	// Chicken and egg: the pools whose secrets may have signed this delivery are found from the
	// repository the body names, and the body is not verified yet. That is safe because the
	// name only chooses which secrets to try: a forged name can at worst make the check try the
	// wrong secrets and fail, and nothing passes without an HMAC made with one of them.
	event := firstHeader(r.Header, "X-Forgejo-Event-Type", "X-Forgejo-Event", "X-Gitea-Event-Type", "X-Gitea-Event")
	candidates, err := h.secrets.Candidates(r.Context(), repoHint(body, event))
	if err != nil {
		// The error may describe the caller's configuration, not the request; it goes to the
		// log but not to the sender.
		return ResultSecretError, http.StatusServiceUnavailable, fmt.Sprintf("looking up secrets: %v", err)
	}
	match, mac, outcome := verify(body, sig, candidates)
	switch outcome {
	case verifyNoSecret:
		return ResultNoSecret, http.StatusUnauthorized, ""
	case verifyMismatch:
		return ResultBadSignature, http.StatusUnauthorized, ""
	}

	// Verified from here on.
	d := delivery{
		id:     firstHeader(r.Header, "X-Forgejo-Delivery", "X-Gitea-Delivery"),
		signer: h.signerID(match.Value),
		mac:    mac,
		grant:  match.Grant,
	}
	if !json.Valid(body) {
		return ResultBadJSON, http.StatusBadRequest, ""
	}
	if !isJobEvent(event) {
		return h.serveRepositoryEvent(r.Context(), d, body, event)
	}
	ev, err := parse(body, event)
	if errors.Is(err, errUnknownStatus) {
		return ResultIgnoredEvent, http.StatusOK, err.Error()
	}
	if err != nil {
		return ResultBadPayload, http.StatusBadRequest, err.Error()
	}
	ev.DeliveryID, ev.Grant = d.id, d.grant
	if !h.seen.add(d.signer, d.mac, d.id, h.now()) {
		return ResultDuplicate, http.StatusOK, ""
	}
	ev.Received = h.now()
	h.sink.HandleJobEvent(r.Context(), ev)
	return ResultAccepted, http.StatusAccepted, fmt.Sprintf("%s job %d attempt %d", ev.Event, ev.Job.ID, ev.Job.Attempt)
}

// isJobEvent reports whether the event type is a workflow_job event, bare or with its status.
// The prefix alone is not enough: workflow_job_unknown is nothing this handler can act on, and
// it is passed to the repository path like any other event.
func isJobEvent(event string) bool {
	return event == bareJobEvent || (strings.HasPrefix(event, eventPrefix) && jobStatuses[strings.TrimPrefix(event, eventPrefix)])
}

// serveRepositoryEvent handles a verified delivery that is not a job event: if it names a
// repository, it is a cue to poll the scopes that cover it.
func (h *Handler) serveRepositoryEvent(ctx context.Context, d delivery, body []byte, event string) (Result, int, string) {
	ev, ok := parseRepository(body)
	if !ok {
		return ResultIgnoredEvent, http.StatusOK, "event " + SafeID(event) + " names no repository"
	}
	ev.Event = SafeID(event)
	ev.DeliveryID, ev.Grant = d.id, d.grant
	if !h.seen.add(d.signer, d.mac, d.id, h.now()) {
		return ResultDuplicate, http.StatusOK, ""
	}
	ev.Received = h.now()
	h.sink.HandleRepositoryEvent(ctx, ev)
	return ResultAccepted, http.StatusAccepted, fmt.Sprintf("%s for %s", ev.Event, ev.Repository)
}

// hookRepository is the part of Forgejo's structs.Repository a delivery is routed by.
type hookRepository struct {
	ID       int64  `json:"id"`
	FullName string `json:"full_name"`
	Owner    *struct {
		ID int64 `json:"id"`
	} `json:"owner"`
}

// parseRepository reads the repository a verified payload names. In modules/structs/hook.go
// (v15.0.3) the repository payloads (push, create, release, issues, pull_request, …) carry it as
// "repository"; ActionPayload (action_run_success, _failure, _recover) carries it inside the run,
// as "run.repository". A name no Forgejo repository could have names nothing.
func parseRepository(body []byte) (RepositoryEvent, bool) {
	var p struct {
		Repository *hookRepository `json:"repository"`
		Run        *struct {
			Repository *hookRepository `json:"repository"`
		} `json:"run"`
	}
	if json.Unmarshal(body, &p) != nil {
		return RepositoryEvent{}, false
	}
	repo := p.Repository
	if repo == nil && p.Run != nil {
		repo = p.Run.Repository
	}
	if repo == nil || !validRepoName(repo.FullName) {
		return RepositoryEvent{}, false
	}
	ev := RepositoryEvent{Repository: repo.FullName, RepoID: max(repo.ID, 0)}
	if repo.Owner != nil {
		ev.OwnerID = max(repo.Owner.ID, 0)
	}
	return ev, true
}

// firstHeader returns the first non-empty value among names.
func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(h.Get(n)); v != "" {
			return v
		}
	}
	return ""
}

// signature returns the first non-empty signature header. Forgejo sends all three with the same
// digest; accepting any one lets a proxy that strips some of them through.
func signature(h http.Header) (string, bool) {
	for _, n := range []string{"X-Forgejo-Signature", "X-Gitea-Signature", "X-Hub-Signature-256"} {
		v := strings.TrimSpace(h.Get(n))
		// A bare "sha256=" is what Forgejo sends in X-Hub-Signature-256 for a hook without a
		// secret: no signature at all.
		v = strings.TrimPrefix(v, "sha256=")
		if v != "" {
			return v, true
		}
	}
	return "", false
}

// delivery is what verification established about a delivery.
type delivery struct {
	// id is the delivery id header, unsigned: "" when the sender sent none.
	id string
	// signer tells apart the secret that verified it, without revealing it.
	signer string
	// mac is the verified HMAC-SHA256 of the body: a digest of the body under its secret.
	mac   []byte
	grant any
}

// verified reports whether a result comes after a successful signature check, so that the
// sender's token is given back.
func verified(res Result) bool {
	switch res {
	case ResultAccepted, ResultDuplicate, ResultIgnoredEvent, ResultBadJSON, ResultBadPayload:
		return true
	case ResultSecretError:
		// Not verified, but the operator's own failure: the sender is not charged for it.
		return true
	}
	return false
}

// signerID is a salted digest of a secret: the dedupe keeps deliveries apart by it, and it says
// nothing about the secret to whoever reads the process's memory or a heap profile.
func (h *Handler) signerID(secret []byte) string {
	m := hmac.New(sha256.New, h.salt)
	m.Write(secret)
	return string(m.Sum(nil)[:16])
}

type verifyResult int

const (
	verifyOK verifyResult = iota
	verifyNoSecret
	verifyMismatch
)

// verify checks sig (hex) against the HMAC-SHA256 of body under each candidate, and returns the
// first candidate that matches and the HMAC it made.
func verify(body []byte, sig string, candidates []Secret) (Secret, []byte, verifyResult) {
	// Malformed hex cannot match, but every candidate is still considered so that "no secret"
	// is reported the same way whatever the signature looks like.
	want, err := hex.DecodeString(sig)
	if err != nil || len(want) != sha256.Size {
		want = nil
	}
	tried := false
	for _, c := range candidates {
		if len(c.Value) == 0 {
			continue
		}
		tried = true
		if want == nil {
			continue
		}
		m := hmac.New(sha256.New, c.Value)
		m.Write(body)
		if sum := m.Sum(nil); hmac.Equal(sum, want) {
			return c, sum, verifyOK
		}
	}
	if !tried {
		return Secret{}, nil, verifyNoSecret
	}
	return Secret{}, nil, verifyMismatch
}

// repoHint extracts the repository full name from an unverified body, or "" if it names none or
// names it in a way no Forgejo repository could be named.
// It reads the repository where the event's parser will (for a job event the top-level
// "repository", for another also an action_run's "run.repository"), so that the repository a
// delivery's secrets are chosen for is the one it is routed by once verified. The event name is
// unsigned too, but it is the same in both places.
func repoHint(body []byte, event string) string {
	if isJobEvent(event) {
		var p struct {
			Repository *struct {
				FullName string `json:"full_name"`
			} `json:"repository"`
		}
		if json.Unmarshal(body, &p) != nil || p.Repository == nil || !validRepoName(p.Repository.FullName) {
			return ""
		}
		return p.Repository.FullName
	}
	ev, ok := parseRepository(body)
	if !ok {
		return ""
	}
	return ev.Repository
}

// validRepoName reports whether name could be a Forgejo repository's "owner/name". A name
// that could not is not passed on: it would end up in Runners, records and logs.
func validRepoName(name string) bool {
	owner, repo, ok := strings.Cut(name, "/")
	return ok && owner != "" && repo != "" && !strings.Contains(repo, "/") && len(name) <= maxRepoHintLen && printable(name)
}

// maxHandleLen bounds a job handle: it is stored in the Runner's spec, which allows 255.
const maxHandleLen = 255

// payload mirrors the parts of Forgejo's WorkflowJobPayload that are read.
type payload struct {
	Action string `json:"action"`
	Job    *struct {
		ID      int64    `json:"id"`
		RunID   int64    `json:"run_id"`
		Attempt int64    `json:"attempt"`
		Handle  string   `json:"handle"`
		RepoID  int64    `json:"repo_id"`
		OwnerID int64    `json:"owner_id"`
		Name    string   `json:"name"`
		RunsOn  []string `json:"runs_on"`
		TaskID  int64    `json:"task_id"`
		Status  string   `json:"status"`
	} `json:"job"`
	Repository *struct {
		FullName string `json:"full_name"`
		Owner    *struct {
			Login    string `json:"login"`
			UserName string `json:"username"`
		} `json:"owner"`
	} `json:"repository"`
}

var errUnknownStatus = errors.New("bare workflow_job event with an unknown job status")

// parse decodes a verified job payload. event is the header's event name, a full
// workflow_job_<status> or the bare workflow_job.
func parse(body []byte, event string) (JobEvent, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		// The decoder's message quotes no input beyond type names and offsets.
		return JobEvent{}, fmt.Errorf("decoding job payload: %w", err)
	}
	if p.Job == nil {
		return JobEvent{}, errors.New("decoding job payload: no job")
	}
	if event == bareJobEvent {
		// The status decides the event when the header does not; a status Forgejo may add
		// later is not an error, just nothing this handler knows how to act on.
		if !jobStatuses[p.Job.Status] {
			return JobEvent{}, errUnknownStatus
		}
		event = eventPrefix + p.Job.Status
	}
	ev := JobEvent{
		Event:  event,
		Action: p.Action,
		Job: Job{
			ID: p.Job.ID, RunID: p.Job.RunID, Attempt: p.Job.Attempt, Handle: p.Job.Handle,
			RunsOn: p.Job.RunsOn, Status: p.Job.Status, RepoID: p.Job.RepoID, OwnerID: p.Job.OwnerID,
			Name: p.Job.Name, TaskID: p.Job.TaskID,
		},
	}
	if len(ev.Job.Handle) > maxHandleLen || !printable(ev.Job.Handle) {
		ev.Job.Handle = "" // no runner can be bound to it; the poller has the job too
	}
	if r := p.Repository; r != nil && validRepoName(r.FullName) {
		ev.Repository = r.FullName
		ev.Owner, _, _ = strings.Cut(r.FullName, "/")
		if r.Owner != nil {
			if login := cmp.Or(r.Owner.Login, r.Owner.UserName); login != "" && len(login) <= maxRepoHintLen && printable(login) {
				ev.Owner = login
			}
		}
	}
	return ev, nil
}

// SafeID makes a request-supplied identifier (a delivery id, an event name) safe for a log line
// or a record: bounded length, printable ASCII only, anything else replaced by '?'.
func SafeID(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxDeliveryIDLogLen; i++ {
		if c := s[i]; c > ' ' && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	if len(s) > maxDeliveryIDLogLen {
		b.WriteString("…")
	}
	return b.String()
}

// printable reports whether s is valid UTF-8 without control characters or spaces.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) })
}

// dedupeKey bounds the memory one remembered id can take: ids longer than a digest are kept as
// their digest.
func dedupeKey(id string) string {
	if len(id) <= 2*sha256.Size {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}
