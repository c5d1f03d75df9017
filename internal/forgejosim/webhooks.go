package forgejosim

// Webhook facts, read in Forgejo's source (Forgejo 15-era trees on the code index: the
// veighnsche/forgejo-ext mirror, cross-checked with creator-signal/fork-forgejo-forgejo):
//
//   - modules/webhook/type.go: one HookEventType per job status, "workflow_job_blocked",
//     "workflow_job_cancelled", "workflow_job_failure", "workflow_job_running",
//     "workflow_job_skipped", "workflow_job_success", "workflow_job_waiting"; and
//     HookEventType.Event() returns that same full name for them (unlike e.g. issue_assign, whose
//     Event() is "issues"). So X-Forgejo-Event and X-Forgejo-Event-Type both carry
//     "workflow_job_waiting" etc.; there is no bare "workflow_job" header value.
//   - modules/webhook/structs.go HookEvents: the per-hook event switches have those names as JSON
//     keys ("workflow_job_waiting": true, …), next to "send_everything"/"choose_events".
//   - services/webhook/notifier.go: NewWorkflowJobAttempt, WorkflowJobStatusChanged and
//     WorkflowJobCompleted each send a WorkflowJobPayload whose event type is chosen from the
//     job's current status (convertActionStatusToHookEventType), with action "new_job_attempt",
//     "job_status_changed" or "job_completed" respectively; the event source is the job's
//     repository and owner, so repository, owner (organization/user) and system hooks fire.
//   - modules/structs/hook.go WorkflowJobPayload: {"action", "job" (ActionRunJob), "run"
//     (ActionRun), "repository"}. An older tree (DaniD3v-Slop/forgejo) has no "repository" key:
//     it was added later, so a parser should fall back to job.repo_id.
//   - modules/structs/action.go ActionRunJob: id, run_id, attempt, handle, repo_id, owner_id,
//     name, html_url, needs, runs_on, task_id, status.
//   - services/webhook/shared/payloader.go AddDefaultHeaders: X-Forgejo-Delivery (the hook task's
//     UUID), X-Forgejo-Event, X-Forgejo-Event-Type, X-Forgejo-Signature (hex HMAC-SHA256 of the
//     body with the hook secret, empty when there is no secret), the same four as X-Gitea-* and
//     X-Gogs-*, X-Hub-Signature ("sha1=" + hex HMAC-SHA1), X-Hub-Signature-256 ("sha256=" + …),
//     X-GitHub-Delivery, X-GitHub-Event, X-GitHub-Event-Type. Bodies are JSON indented with two
//     spaces (JSONPayload uses json.MarshalIndent).
//   - services/webhook/deliver.go sends each hook task once; retrying a failed delivery is a
//     manual "redeliver" in Forgejo. The simulator retries (Options.WebhookMaxAttempts) because
//     the operator's tests want a flaky receiver to recover; set WebhookMaxAttempts to 1 for
//     Forgejo's behaviour.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Webhook payload actions (modules/structs/hook.go HookWorkflowJobAction).
const (
	ActionNewJobAttempt    = "new_job_attempt"
	ActionJobStatusChanged = "job_status_changed"
	ActionJobCompleted     = "job_completed"
)

// Job webhook event names: hook settings keys and the X-Forgejo-Event(-Type) header values.
const (
	EventWorkflowJobWaiting   = "workflow_job_waiting"
	EventWorkflowJobRunning   = "workflow_job_running"
	EventWorkflowJobSuccess   = "workflow_job_success"
	EventWorkflowJobFailure   = "workflow_job_failure"
	EventWorkflowJobCancelled = "workflow_job_cancelled"
	EventWorkflowJobSkipped   = "workflow_job_skipped"
	EventWorkflowJobBlocked   = "workflow_job_blocked"
)

var jobEvents = []string{
	EventWorkflowJobWaiting, EventWorkflowJobRunning, EventWorkflowJobSuccess, EventWorkflowJobFailure,
	EventWorkflowJobCancelled, EventWorkflowJobSkipped, EventWorkflowJobBlocked,
}

// HookConfig configures a webhook.
type HookConfig struct {
	URL    string `json:"url"`
	Secret string `json:"secret,omitempty"`
	// Events are the job event names the hook wants; empty means all of them (Forgejo's
	// "send_everything").
	Events []string `json:"events,omitempty"`
	// Scope places the hook: instance (a system hook), organization or user (the owner's hooks,
	// for all its repositories) or repository.
	Scope Scope `json:"scope"`
}

// Hook is a configured webhook as the state shows it; the secret is never shown.
type Hook struct {
	ID        int64    `json:"id"`
	URL       string   `json:"url"`
	Events    []string `json:"events"`
	Scope     Scope    `json:"scope"`
	HasSecret bool     `json:"has_secret"`
}

// DeliveryStatus is where a webhook delivery stands.
type DeliveryStatus string

// Delivery statuses.
const (
	DeliveryPending   DeliveryStatus = "pending"   // being sent or waiting to retry
	DeliveryDelivered DeliveryStatus = "delivered" // a 2xx answer came back
	DeliveryFailed    DeliveryStatus = "failed"    // every attempt failed
	DeliveryDropped   DeliveryStatus = "dropped"   // a fault dropped it; never sent
	DeliveryAbandoned DeliveryStatus = "abandoned" // the server closed before it was done
)

// Delivery records one event sent (or meant to be sent) to one hook.
type Delivery struct {
	ID             string          `json:"id"` // the X-Forgejo-Delivery header
	HookID         int64           `json:"hook_id"`
	Event          string          `json:"event"`
	Action         string          `json:"action"`
	JobID          int64           `json:"job_id"`
	Status         DeliveryStatus  `json:"status"`
	Attempts       int             `json:"attempts"`
	Duplicates     int             `json:"duplicates,omitempty"` // extra sends caused by a fault
	LastStatusCode int             `json:"last_status_code,omitempty"`
	LastError      string          `json:"last_error,omitempty"`
	Created        time.Time       `json:"created"`
	Payload        json.RawMessage `json:"payload"`
}

type hook struct {
	id  int64
	cfg HookConfig
	// ownerID/repoID place the hook like Forgejo's webhook table: both 0 for a system hook.
	ownerID, repoID int64
}

// AddHook configures a webhook and returns it.
func (s *Server) AddHook(cfg HookConfig) (Hook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Hook{}, fmt.Errorf("add hook: url %q is not an absolute http(s) URL", cfg.URL)
	}
	for _, e := range cfg.Events {
		if !slices.Contains(jobEvents, e) {
			return Hook{}, fmt.Errorf("add hook: unknown event %q (the simulator sends %v)", e, jobEvents)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.validateScopeLocked(cfg.Scope); err != nil {
		return Hook{}, fmt.Errorf("add hook: %w", err)
	}
	h := &hook{id: s.nextIDLocked("hook"), cfg: cfg}
	h.cfg.Events = slices.Clone(cfg.Events)
	switch cfg.Scope.Kind {
	case ScopeOrganization, ScopeUser:
		h.ownerID = s.findOwnerLocked(cfg.Scope.Owner).id
	case ScopeRepository:
		r, _ := s.ensureRepoLocked(cfg.Scope.Repo)
		h.repoID = r.id
	}
	s.hooks[h.id] = h
	return hookView(h), nil
}

// RemoveHook deletes a webhook; deliveries already started go on.
func (s *Server) RemoveHook(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.hooks[id]; !ok {
		return fmt.Errorf("remove hook %d: no such hook", id)
	}
	delete(s.hooks, id)
	return nil
}

// Deliveries returns every webhook delivery so far, oldest first.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveriesLocked()
}

func (s *Server) deliveriesLocked() []Delivery {
	out := make([]Delivery, 0, len(s.deliveries))
	for _, d := range s.deliveries {
		c := *d
		c.Payload = slices.Clone(d.Payload)
		out = append(out, c)
	}
	return out
}

func hookView(h *hook) Hook {
	return Hook{ID: h.id, URL: h.cfg.URL, Events: nonNil(h.cfg.Events), Scope: h.cfg.Scope, HasSecret: h.cfg.Secret != ""}
}

// WorkflowJobPayload is the body of a workflow_job_* delivery (modules/structs/hook.go).
type WorkflowJobPayload struct {
	Action     string         `json:"action"`
	Job        *APIJob        `json:"job"`
	Run        *APIRun        `json:"run"`
	Repository *APIRepository `json:"repository"`
}

// APIRun is the subset of Forgejo's ActionRun (modules/structs/action.go) the simulator fills.
// ScheduleID has no JSON tag in Forgejo, hence its key.
type APIRun struct {
	ID                int64          `json:"id"`
	Title             string         `json:"title"`
	Repo              *APIRepository `json:"repository"`
	WorkflowID        string         `json:"workflow_id"`
	Index             int64          `json:"index_in_repo"`
	TriggerUser       *APIUser       `json:"trigger_user"`
	ScheduleID        int64
	PrettyRef         string    `json:"prettyref"`
	IsRefDeleted      bool      `json:"is_ref_deleted"`
	CommitSHA         string    `json:"commit_sha"`
	IsForkPullRequest bool      `json:"is_fork_pull_request"`
	NeedApproval      bool      `json:"need_approval"`
	ApprovedBy        int64     `json:"approved_by"`
	Event             string    `json:"event"`
	EventPayload      string    `json:"event_payload"`
	TriggerEvent      string    `json:"trigger_event"`
	Status            string    `json:"status"`
	Started           time.Time `json:"started"`
	Stopped           time.Time `json:"stopped"`
	Created           time.Time `json:"created"`
	Updated           time.Time `json:"updated"`
	HTMLURL           string    `json:"html_url"`
}

// APIRepository is the subset of Forgejo's Repository the simulator fills.
type APIRepository struct {
	ID            int64    `json:"id"`
	Owner         *APIUser `json:"owner"`
	Name          string   `json:"name"`
	FullName      string   `json:"full_name"`
	Private       bool     `json:"private"`
	HTMLURL       string   `json:"html_url"`
	CloneURL      string   `json:"clone_url"`
	DefaultBranch string   `json:"default_branch"`
}

// APIUser is the subset of Forgejo's User the simulator fills; "username" is the
// Gitea-compatible duplicate of "login".
type APIUser struct {
	ID       int64  `json:"id"`
	Login    string `json:"login"`
	UserName string `json:"username"`
	FullName string `json:"full_name"`
}

func (s *Server) apiRepoLocked(r *repository) *APIRepository {
	base := s.baseURLLocked()
	return &APIRepository{
		ID: r.id, Owner: &APIUser{ID: r.owner.id, Login: r.owner.name, UserName: r.owner.name},
		Name: r.name, FullName: r.fullName(), HTMLURL: base + "/" + r.fullName(),
		CloneURL: base + "/" + r.fullName() + ".git", DefaultBranch: "main",
	}
}

// emitJobEventLocked queues a delivery of j's current state to every hook that wants it.
func (s *Server) emitJobEventLocked(j *job, action string) {
	event := "workflow_job_" + string(j.status)
	var body []byte
	for _, id := range sortedKeys(s.hooks) {
		h := s.hooks[id]
		if !(h.ownerID == 0 && h.repoID == 0 || h.ownerID == j.repo.owner.id || h.repoID == j.repo.id) {
			continue
		}
		if len(h.cfg.Events) > 0 && !slices.Contains(h.cfg.Events, event) {
			continue
		}
		if body == nil {
			body = s.jobPayloadLocked(j, action)
		}
		d := &Delivery{
			ID: s.uuidLocked(), HookID: h.id, Event: event, Action: action, JobID: j.id,
			Status: DeliveryPending, Created: s.now(), Payload: body,
		}
		s.deliveries = append(s.deliveries, d)
		switch {
		case s.chanceLocked(s.hookFaults.DropRate):
			d.Status = DeliveryDropped
			s.logf("forgejosim: dropped delivery %s (%s) to hook %d", d.ID, event, h.id)
			continue
		case s.ctx.Err() != nil:
			d.Status = DeliveryAbandoned
			continue
		}
		duplicate := s.chanceLocked(s.hookFaults.DuplicateRate)
		s.wg.Add(1)
		go s.deliver(d, h.cfg.URL, h.cfg.Secret, duplicate)
	}
}

func (s *Server) jobPayloadLocked(j *job, action string) []byte {
	repo := s.apiRepoLocked(j.repo)
	apiJob := s.apiJobLocked(j)
	trigger := repo.Owner
	updated := j.created
	for _, t := range []time.Time{j.started, j.stopped} {
		if t.After(updated) {
			updated = t
		}
	}
	payload := WorkflowJobPayload{
		Action: action,
		Job:    &apiJob,
		Run: &APIRun{
			ID: j.runID, Title: "simulated run", Repo: repo, WorkflowID: "simulated.yml", Index: j.runID,
			TriggerUser: trigger, PrettyRef: "main", CommitSHA: "0000000000000000000000000000000000000000",
			Event: "push", TriggerEvent: "push", Status: string(j.status),
			Started: j.started, Stopped: j.stopped, Created: j.created, Updated: updated,
			HTMLURL: fmt.Sprintf("%s/%s/actions/runs/%d", s.baseURLLocked(), j.repo.fullName(), j.runID),
		},
		Repository: repo,
	}
	body, err := json.MarshalIndent(payload, "", "  ")
	if err != nil {
		// The payload holds only plain values; failing to encode it is a programming error.
		panic(fmt.Sprintf("encode webhook payload: %v", err))
	}
	return body
}

// deliver sends d, retrying with exponential backoff, and records each attempt on d.
func (s *Server) deliver(d *Delivery, target, secret string, duplicate bool) {
	defer s.wg.Done()
	s.mu.Lock()
	body, id, event := d.Payload, d.ID, d.Event
	s.mu.Unlock()

	wait := s.opts.WebhookRetryBase
	for attempt := 1; ; attempt++ {
		code, err := s.post(target, secret, id, event, body)
		ok := err == nil && code/100 == 2
		s.mu.Lock()
		d.Attempts++
		d.LastStatusCode = code
		d.LastError = ""
		if err != nil {
			d.LastError = err.Error()
		} else if !ok {
			d.LastError = fmt.Sprintf("receiver answered %d", code)
		}
		switch {
		case ok:
			d.Status = DeliveryDelivered
		case attempt >= s.opts.WebhookMaxAttempts:
			d.Status = DeliveryFailed
		}
		status := d.Status
		s.mu.Unlock()
		if status != DeliveryPending {
			s.logf("forgejosim: delivery %s (%s) %s after %d attempt(s)", id, event, status, attempt)
			break
		}
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
			s.mu.Lock()
			d.Status = DeliveryAbandoned
			s.mu.Unlock()
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
	if duplicate {
		_, _ = s.post(target, secret, id, event, body)
		s.mu.Lock()
		d.Duplicates++
		s.mu.Unlock()
	}
}

// post sends one delivery attempt with Forgejo's headers and returns the receiver's status code.
func (s *Server) post(target, secret, deliveryID, event string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build delivery request: %w", err)
	}
	var sig1, sig256 string
	if secret != "" {
		m1 := hmac.New(sha1.New, []byte(secret))
		m256 := hmac.New(sha256.New, []byte(secret))
		m1.Write(body)
		m256.Write(body)
		sig1, sig256 = hex.EncodeToString(m1.Sum(nil)), hex.EncodeToString(m256.Sum(nil))
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	for _, vendor := range []string{"X-Forgejo", "X-Gitea", "X-Gogs"} {
		h.Set(vendor+"-Delivery", deliveryID)
		h.Set(vendor+"-Event", event)
		h.Set(vendor+"-Event-Type", event)
		h.Set(vendor+"-Signature", sig256)
	}
	h.Set("X-Hub-Signature", "sha1="+sig1)
	h.Set("X-Hub-Signature-256", "sha256="+sig256)
	// GitHub's spelling is not canonical MIME case, so it is set directly, as Forgejo does.
	h["X-GitHub-Delivery"] = []string{deliveryID}
	h["X-GitHub-Event"] = []string{event}
	h["X-GitHub-Event-Type"] = []string{event}

	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("deliver to %s: %w", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}
