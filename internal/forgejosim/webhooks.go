package forgejosim

// Webhook facts, read in Forgejo v15.0.3's source:
//
//   - modules/webhook/type.go: the complete list of event types. There is no per-job event: the
//     only Actions events are action_run_success, action_run_failure and action_run_recover,
//     about a whole run. HookEventType.Event() is the short name sent in X-Forgejo-Event (e.g.
//     "issues" for issue_label, "pull_request" for pull_request_sync); X-Forgejo-Event-Type
//     carries the full type.
//   - models/webhook/webhook.go EventCheckers: the events a hook can choose (the keys of
//     modules/webhook/structs.go HookEvents, plus the review sub-events); a hook with
//     send_everything gets them all. schedule and workflow_dispatch cannot be chosen.
//   - services/webhook/webhook.go PrepareWebhooks: a repository event goes to the repository's
//     hooks, then its owner's (user or organization), then the system hooks.
//   - services/webhook/notifier.go: a push sends PushPayload (modules/structs/hook.go); a run that
//     becomes done sends ActionPayload {action, run, prior_status, last_run} as
//     action_run_success when the run's status is success, and action_run_failure for every other
//     done status (failure, cancelled, skipped). action_run_recover is sent only when the last
//     run of the same workflow was not a success, and models/actions/run.go GetRunBefore returns
//     nil in 15.0.3, so Forgejo 15.0.3 never sends action_run_recover and never fills last_run.
//   - services/actions/notifier_helper.go handleWorkflows: the run is inserted while the push is
//     handled; the webhook notifier runs first and only queues the delivery, so a delivery
//     normally arrives after the jobs are listed, but nothing orders the two.
//   - services/webhook/shared/payloader.go AddDefaultHeaders: X-Forgejo-Delivery (the hook task's
//     UUID), X-Forgejo-Event, X-Forgejo-Event-Type, X-Forgejo-Signature (hex HMAC-SHA256 of the
//     body with the hook secret, empty when there is no secret), the same four as X-Gitea-* and
//     X-Gogs-*, X-Hub-Signature ("sha1=" + hex HMAC-SHA1), X-Hub-Signature-256 ("sha256=" + …),
//     X-GitHub-Delivery, X-GitHub-Event, X-GitHub-Event-Type. Bodies are JSON indented with two
//     spaces (the payloads' JSONPayload use json.MarshalIndent).
//   - services/webhook/deliver.go sends each hook task once; retrying a failed delivery is a
//     manual "redeliver". The simulator retries only when Options.WebhookMaxAttempts asks.
//
// workflow_job_* events exist in Gitea 1.24+ and may come in a later Forgejo; the simulator sends
// them, as some Forgejo forks shape them (one event type per job status, WorkflowJobPayload), only
// with Options.JobEvents.

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
	"strings"
	"time"
)

// Forgejo 15 webhook event types (modules/webhook/type.go), as a hook's Events take them.
const (
	EventCreate                    = "create"
	EventDelete                    = "delete"
	EventFork                      = "fork"
	EventPush                      = "push"
	EventIssues                    = "issues"
	EventIssueAssign               = "issue_assign"
	EventIssueLabel                = "issue_label"
	EventIssueMilestone            = "issue_milestone"
	EventIssueComment              = "issue_comment"
	EventPullRequest               = "pull_request"
	EventPullRequestAssign         = "pull_request_assign"
	EventPullRequestLabel          = "pull_request_label"
	EventPullRequestMilestone      = "pull_request_milestone"
	EventPullRequestComment        = "pull_request_comment"
	EventPullRequestReviewApproved = "pull_request_review_approved"
	EventPullRequestReviewRejected = "pull_request_review_rejected"
	EventPullRequestReviewComment  = "pull_request_review_comment"
	EventPullRequestSync           = "pull_request_sync"
	EventPullRequestReviewRequest  = "pull_request_review_request"
	EventWiki                      = "wiki"
	EventRepository                = "repository"
	EventRelease                   = "release"
	EventPackage                   = "package"
	EventActionRunFailure          = "action_run_failure"
	EventActionRunRecover          = "action_run_recover"
	EventActionRunSuccess          = "action_run_success"
)

// hookEvents are the events a Forgejo 15 hook can choose (models/webhook/webhook.go
// EventCheckers).
var hookEvents = []string{
	EventCreate, EventDelete, EventFork, EventPush, EventIssues, EventIssueAssign, EventIssueLabel,
	EventIssueMilestone, EventIssueComment, EventPullRequest, EventPullRequestAssign,
	EventPullRequestLabel, EventPullRequestMilestone, EventPullRequestComment,
	EventPullRequestReviewApproved, EventPullRequestReviewRejected, EventPullRequestReviewComment,
	EventPullRequestSync, EventWiki, EventRepository, EventRelease, EventPackage,
	EventPullRequestReviewRequest, EventActionRunFailure, EventActionRunRecover, EventActionRunSuccess,
}

// eventHeader is HookEventType.Event(): the X-Forgejo-Event value of an event type.
func eventHeader(event string) string {
	switch event {
	case EventIssueAssign, EventIssueLabel, EventIssueMilestone:
		return EventIssues
	case EventPullRequestAssign, EventPullRequestLabel, EventPullRequestMilestone, EventPullRequestSync, EventPullRequestReviewRequest:
		return EventPullRequest
	case EventPullRequestComment:
		return EventIssueComment
	case EventPullRequestReviewApproved:
		return "pull_request_approved"
	case EventPullRequestReviewRejected:
		return "pull_request_rejected"
	case EventPullRequestReviewComment:
		return "pull_request_comment"
	}
	// The fork payloads' job events have the same value in both headers.
	return event
}

// ActionPayload actions (modules/structs/hook.go HookActionAction).
const (
	ActionRunFailure = "failure"
	ActionRunRecover = "recover"
	ActionRunSuccess = "success"
)

// Job webhook payload actions, sent only with Options.JobEvents (a newer server's
// HookWorkflowJobAction).
const (
	ActionNewJobAttempt    = "new_job_attempt"
	ActionJobStatusChanged = "job_status_changed"
	ActionJobCompleted     = "job_completed"
)

// Job webhook event names of a newer server, sent only with Options.JobEvents; Forgejo 15 has
// none of them.
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
	// Events are the Forgejo event types the hook wants (push, pull_request, action_run_success, …;
	// see the Event* constants); empty means all of them (Forgejo's "send_everything"). The
	// workflow_job_* names are accepted only with Options.JobEvents.
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
	Event          string          `json:"event"` // the event type (X-Forgejo-Event-Type)
	Action         string          `json:"action,omitempty"`
	RunID          int64           `json:"run_id,omitempty"`
	JobID          int64           `json:"job_id,omitempty"`
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
		switch {
		case slices.Contains(hookEvents, e):
		case slices.Contains(jobEvents, e) && s.opts.JobEvents:
		case slices.Contains(jobEvents, e):
			return Hook{}, fmt.Errorf("add hook: Forgejo 15 has no event %q; start the simulator with JobEvents to act as a newer server", e)
		default:
			return Hook{}, fmt.Errorf("add hook: unknown event %q (Forgejo 15's are %s)", e, strings.Join(hookEvents, ", "))
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

// PushPayload is the body of a push delivery (modules/structs/hook.go PushPayload).
type PushPayload struct {
	Ref          string           `json:"ref"`
	Before       string           `json:"before"`
	After        string           `json:"after"`
	CompareURL   string           `json:"compare_url"`
	Commits      []*PayloadCommit `json:"commits"`
	TotalCommits int              `json:"total_commits"`
	HeadCommit   *PayloadCommit   `json:"head_commit"`
	Repo         *APIRepository   `json:"repository"`
	Pusher       *APIUser         `json:"pusher"`
	Sender       *APIUser         `json:"sender"`
}

// PayloadCommit is a commit of a push (modules/structs/hook.go PayloadCommit).
type PayloadCommit struct {
	ID           string                     `json:"id"`
	Message      string                     `json:"message"`
	URL          string                     `json:"url"`
	Author       *PayloadUser               `json:"author"`
	Committer    *PayloadUser               `json:"committer"`
	Verification *PayloadCommitVerification `json:"verification"`
	Timestamp    time.Time                  `json:"timestamp"`
	Added        []string                   `json:"added"`
	Removed      []string                   `json:"removed"`
	Modified     []string                   `json:"modified"`
}

// PayloadUser is a commit's author or committer (modules/structs/hook.go PayloadUser).
type PayloadUser struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	UserName string `json:"username"`
}

// PayloadCommitVerification is a commit's signature check (modules/structs/hook.go).
type PayloadCommitVerification struct {
	Verified  bool         `json:"verified"`
	Reason    string       `json:"reason"`
	Signature string       `json:"signature"`
	Signer    *PayloadUser `json:"signer"`
	Payload   string       `json:"payload"`
}

// ActionPayload is the body of an action_run_* delivery (modules/structs/hook.go ActionPayload).
type ActionPayload struct {
	Action      string  `json:"action"`
	Run         *APIRun `json:"run"`
	PriorStatus string  `json:"prior_status"`
	LastRun     *APIRun `json:"last_run,omitempty"`
}

// WorkflowJobPayload is the body of a workflow_job_* delivery of a newer server (sent only with
// Options.JobEvents).
type WorkflowJobPayload struct {
	Action     string         `json:"action"`
	Job        *APIJob        `json:"job"`
	Run        *APIRun        `json:"run"`
	Repository *APIRepository `json:"repository"`
}

// APIRun is Forgejo's ActionRun (modules/structs/action.go, filled by services/convert/action.go
// ToActionRun). ScheduleID has no JSON tag in Forgejo, hence its key.
type APIRun struct {
	ID                int64          `json:"id"`
	Title             string         `json:"title"`
	Repo              *APIRepository `json:"repository"`
	WorkflowID        string         `json:"workflow_id"`
	Index             int64          `json:"index_in_repo"`
	TriggerUser       *APIUser       `json:"trigger_user"`
	ScheduleID        int64
	PrettyRef         string        `json:"prettyref"`
	IsRefDeleted      bool          `json:"is_ref_deleted"`
	CommitSHA         string        `json:"commit_sha"`
	IsForkPullRequest bool          `json:"is_fork_pull_request"`
	NeedApproval      bool          `json:"need_approval"`
	ApprovedBy        int64         `json:"approved_by"`
	Event             string        `json:"event"`
	EventPayload      string        `json:"event_payload"`
	TriggerEvent      string        `json:"trigger_event"`
	Status            string        `json:"status"`
	Started           time.Time     `json:"started"`
	Stopped           time.Time     `json:"stopped"`
	Created           time.Time     `json:"created"`
	Updated           time.Time     `json:"updated"`
	Duration          time.Duration `json:"duration,omitempty"`
	HTMLURL           string        `json:"html_url"`
}

// APIRepository is Forgejo's Repository (modules/structs/repo.go) as services/convert ToRepo
// fills it for a simulated repository: private, with Actions, on branch main.
type APIRepository struct {
	ID                            int64          `json:"id"`
	Owner                         *APIUser       `json:"owner"`
	Name                          string         `json:"name"`
	FullName                      string         `json:"full_name"`
	Description                   string         `json:"description"`
	Empty                         bool           `json:"empty"`
	Private                       bool           `json:"private"`
	Fork                          bool           `json:"fork"`
	Template                      bool           `json:"template"`
	Parent                        *APIRepository `json:"parent"`
	Mirror                        bool           `json:"mirror"`
	Size                          int            `json:"size"`
	Language                      string         `json:"language"`
	LanguagesURL                  string         `json:"languages_url"`
	HTMLURL                       string         `json:"html_url"`
	URL                           string         `json:"url"`
	Link                          string         `json:"link"`
	SSHURL                        string         `json:"ssh_url"`
	CloneURL                      string         `json:"clone_url"`
	OriginalURL                   string         `json:"original_url"`
	Website                       string         `json:"website"`
	Stars                         int            `json:"stars_count"`
	Forks                         int            `json:"forks_count"`
	Watchers                      int            `json:"watchers_count"`
	OpenIssues                    int            `json:"open_issues_count"`
	OpenPulls                     int            `json:"open_pr_counter"`
	Releases                      int            `json:"release_counter"`
	DefaultBranch                 string         `json:"default_branch"`
	Archived                      bool           `json:"archived"`
	Created                       time.Time      `json:"created_at"`
	Updated                       time.Time      `json:"updated_at"`
	ArchivedAt                    time.Time      `json:"archived_at"`
	HasIssues                     bool           `json:"has_issues"`
	HasWiki                       bool           `json:"has_wiki"`
	HasWikiContents               bool           `json:"has_wiki_contents"`
	WikiSSHURL                    string         `json:"wiki_ssh_url"`
	WikiCloneURL                  string         `json:"wiki_clone_url"`
	GloballyEditableWiki          bool           `json:"globally_editable_wiki"`
	HasPullRequests               bool           `json:"has_pull_requests"`
	HasProjects                   bool           `json:"has_projects"`
	HasReleases                   bool           `json:"has_releases"`
	HasPackages                   bool           `json:"has_packages"`
	HasActions                    bool           `json:"has_actions"`
	IgnoreWhitespaceConflicts     bool           `json:"ignore_whitespace_conflicts"`
	AllowMerge                    bool           `json:"allow_merge_commits"`
	AllowRebase                   bool           `json:"allow_rebase"`
	AllowRebaseMerge              bool           `json:"allow_rebase_explicit"`
	AllowSquash                   bool           `json:"allow_squash_merge"`
	AllowFastForwardOnly          bool           `json:"allow_fast_forward_only_merge"`
	AllowRebaseUpdate             bool           `json:"allow_rebase_update"`
	DefaultDeleteBranchAfterMerge bool           `json:"default_delete_branch_after_merge"`
	DefaultMergeStyle             string         `json:"default_merge_style"`
	DefaultAllowMaintainerEdit    bool           `json:"default_allow_maintainer_edit"`
	DefaultUpdateStyle            string         `json:"default_update_style"`
	AvatarURL                     string         `json:"avatar_url"`
	Internal                      bool           `json:"internal"`
	MirrorInterval                string         `json:"mirror_interval"`
	ObjectFormatName              string         `json:"object_format_name"`
	MirrorUpdated                 time.Time      `json:"mirror_updated"`
	RepoTransfer                  *struct{}      `json:"repo_transfer"`
	Topics                        []string       `json:"topics"`
	// Permissions are the caller's rights, shown by GET /repos/{owner}/{repo} and absent from
	// webhook payloads here.
	Permissions *APIPermission `json:"permissions,omitempty"`
}

// APIPermission is Forgejo's Permission (modules/structs/repo.go), what services/convert ToRepo
// computes from the caller's access: admin, and write (push) or read (pull) of the code.
type APIPermission struct {
	Admin bool `json:"admin"`
	Push  bool `json:"push"`
	Pull  bool `json:"pull"`
}

// APIUser is Forgejo's User (modules/structs/user.go); "username" is the Gitea-compatible copy of
// "login" that User.MarshalJSON adds.
type APIUser struct {
	ID            int64     `json:"id"`
	Login         string    `json:"login"`
	LoginName     string    `json:"login_name"`
	SourceID      int64     `json:"source_id"`
	FullName      string    `json:"full_name"`
	Email         string    `json:"email"`
	AvatarURL     string    `json:"avatar_url"`
	HTMLURL       string    `json:"html_url"`
	Language      string    `json:"language"`
	IsAdmin       bool      `json:"is_admin"`
	LastLogin     time.Time `json:"last_login"`
	Created       time.Time `json:"created"`
	Restricted    bool      `json:"restricted"`
	IsActive      bool      `json:"active"`
	ProhibitLogin bool      `json:"prohibit_login"`
	Location      string    `json:"location"`
	Pronouns      string    `json:"pronouns"`
	Website       string    `json:"website"`
	Description   string    `json:"description"`
	Visibility    string    `json:"visibility"`
	Followers     int       `json:"followers_count"`
	Following     int       `json:"following_count"`
	StarredRepos  int       `json:"starred_repos_count"`
	UserName      string    `json:"username"`
}

// timestamp is a Forgejo timeutil.TimeStamp as the API shows it: whole seconds, and the Unix
// epoch for "never".
func timestamp(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t.Truncate(time.Second).UTC()
}

func (s *Server) apiUserLocked(o *owner) *APIUser {
	base := s.baseURLLocked()
	return &APIUser{
		ID: o.id, Login: o.name, UserName: o.name, Email: o.name + "@noreply.forgejo.invalid",
		AvatarURL: base + "/avatars/" + o.name, HTMLURL: base + "/" + o.name, IsActive: true,
		LastLogin: timestamp(time.Time{}), Created: timestamp(o.created), Visibility: o.visibility,
	}
}

func (s *Server) apiRepoLocked(r *repository) *APIRepository {
	base := s.baseURLLocked()
	full := r.fullName()
	return &APIRepository{
		ID: r.id, Owner: s.apiUserLocked(r.owner), Name: r.name, FullName: full, Private: true,
		LanguagesURL: base + "/api/v1/repos/" + full + "/languages", HTMLURL: base + "/" + full,
		URL: base + "/api/v1/repos/" + full, Link: "", SSHURL: "git@" + hostOf(base) + ":" + full + ".git",
		CloneURL: base + "/" + full + ".git", DefaultBranch: defaultBranch, Created: timestamp(r.created),
		Updated: timestamp(r.created), ArchivedAt: timestamp(time.Time{}), HasIssues: true, HasWiki: true,
		WikiSSHURL: "git@" + hostOf(base) + ":" + full + ".wiki.git", WikiCloneURL: base + "/" + full + ".wiki.git",
		HasPullRequests: true, HasProjects: true, HasReleases: true, HasPackages: true, HasActions: true,
		AllowMerge: true, AllowRebase: true, AllowRebaseMerge: true, AllowSquash: true, AllowFastForwardOnly: true,
		AllowRebaseUpdate: true, DefaultMergeStyle: "merge", DefaultUpdateStyle: "merge",
		ObjectFormatName: "sha1", MirrorUpdated: timestamp(time.Time{}), Topics: []string{},
	}
}

func hostOf(base string) string {
	if u, err := url.Parse(base); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return "forgejo.invalid"
}

// pushPayloadLocked is what services/webhook/notifier.go PushCommits sends for one simulated
// commit on the default branch, pushed by the repository's owner.
func (s *Server) pushPayloadLocked(r *run, before string) *PushPayload {
	base := s.baseURLLocked()
	full := r.repo.fullName()
	who := &PayloadUser{Name: r.trigger.name, Email: r.trigger.name + "@noreply.forgejo.invalid", UserName: r.trigger.name}
	commit := &PayloadCommit{
		ID: r.commitSHA, Message: r.title + "\n", URL: base + "/" + full + "/commit/" + r.commitSHA,
		Author: who, Committer: who, Timestamp: r.created.Truncate(time.Second),
		Added: []string{}, Removed: []string{}, Modified: []string{".forgejo/workflows/" + r.workflowID},
	}
	return &PushPayload{
		Ref: r.ref, Before: before, After: r.commitSHA,
		CompareURL: base + "/" + full + "/compare/" + before + "..." + r.commitSHA,
		Commits:    []*PayloadCommit{commit}, TotalCommits: 1, HeadCommit: commit,
		Repo: s.apiRepoLocked(r.repo), Pusher: s.apiUserLocked(r.trigger), Sender: s.apiUserLocked(r.trigger),
	}
}

// apiRunLocked is services/convert/action.go ToActionRun.
func (s *Server) apiRunLocked(r *run) *APIRun {
	v := &APIRun{
		ID: r.id, Title: r.title, Repo: s.apiRepoLocked(r.repo), WorkflowID: r.workflowID, Index: r.index,
		TriggerUser: s.apiUserLocked(r.trigger), PrettyRef: strings.TrimPrefix(r.ref, "refs/heads/"),
		CommitSHA: r.commitSHA, Event: eventHeader(r.event), EventPayload: r.payload, TriggerEvent: r.event,
		Status: string(r.status), Started: timestamp(r.started), Stopped: timestamp(r.stopped),
		Created: timestamp(r.created), Updated: timestamp(s.now()),
		HTMLURL: fmt.Sprintf("%s/%s/actions/runs/%d", s.baseURLLocked(), r.repo.fullName(), r.index),
	}
	if !r.started.IsZero() && !r.stopped.IsZero() {
		v.Duration = r.stopped.Truncate(time.Second).Sub(r.started.Truncate(time.Second))
	}
	return v
}

// emitRunDoneLocked is services/webhook/notifier.go ActionRunNowDone: action_run_success for a
// successful run, action_run_failure for any other done status. There is no last run in
// 15.0.3 (GetRunBefore returns nil), hence no action_run_recover.
func (s *Server) emitRunDoneLocked(r *run, prior JobStatus) {
	payload := &ActionPayload{Run: s.apiRunLocked(r), PriorStatus: string(prior)}
	if r.status == JobSuccess {
		payload.Action = ActionRunSuccess
		s.emitLocked(r.repo, EventActionRunSuccess, payload, r.id)
		return
	}
	payload.Action = ActionRunFailure
	s.emitLocked(r.repo, EventActionRunFailure, payload, r.id)
}

func mustMarshal(v any, indent bool) []byte {
	var body []byte
	var err error
	if indent {
		body, err = json.MarshalIndent(v, "", "  ")
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		// Payloads hold only plain values; failing to encode one is a programming error.
		panic(fmt.Sprintf("encode webhook payload: %v", err))
	}
	return body
}

// hooksForRepoLocked are the hooks PrepareWebhooks picks for an event of repository repo, in its
// order: the repository's, its owner's, then the system hooks.
func (s *Server) hooksForRepoLocked(repo *repository) []*hook {
	var repoHooks, ownerHooks, systemHooks []*hook
	for _, id := range sortedKeys(s.hooks) {
		h := s.hooks[id]
		switch {
		case h.repoID != 0 && h.repoID == repo.id:
			repoHooks = append(repoHooks, h)
		case h.repoID == 0 && h.ownerID != 0 && h.ownerID == repo.owner.id:
			ownerHooks = append(ownerHooks, h)
		case h.repoID == 0 && h.ownerID == 0:
			systemHooks = append(systemHooks, h)
		}
	}
	return append(append(repoHooks, ownerHooks...), systemHooks...)
}

// emitLocked queues one delivery of event, with payload as its body, to every hook of repo's
// scopes that wants it (services/webhook/webhook.go PrepareWebhooks and PrepareWebhook).
func (s *Server) emitLocked(repo *repository, event string, payload any, runID int64) {
	var body []byte
	action := ""
	if p, ok := payload.(*ActionPayload); ok {
		action = p.Action
	}
	for _, h := range s.hooksForRepoLocked(repo) {
		if len(h.cfg.Events) > 0 && !slices.Contains(h.cfg.Events, event) {
			continue
		}
		if body == nil {
			body = mustMarshal(payload, true)
		}
		s.queueDeliveryLocked(h, &Delivery{Event: event, Action: action, RunID: runID, Payload: body})
	}
}

// queueDeliveryLocked records d for hook h and sends it in the background, unless a fault drops it.
func (s *Server) queueDeliveryLocked(h *hook, d *Delivery) {
	d.ID, d.HookID, d.Status, d.Created = s.uuidLocked(), h.id, DeliveryPending, s.now()
	s.deliveries = append(s.deliveries, d)
	switch {
	case s.chanceLocked(s.hookFaults.DropRate):
		d.Status = DeliveryDropped
		s.logf("forgejosim: dropped delivery %s (%s) to hook %d", d.ID, d.Event, h.id)
		return
	case s.ctx.Err() != nil:
		d.Status = DeliveryAbandoned
		return
	}
	duplicate := s.chanceLocked(s.hookFaults.DuplicateRate)
	s.wg.Add(1)
	go s.deliver(d, h.cfg.URL, h.cfg.Secret, duplicate)
}

// emitJobEventLocked queues a newer server's workflow_job delivery of j's current state to every
// hook that wants it; Forgejo 15 sends none, so without Options.JobEvents it does nothing.
func (s *Server) emitJobEventLocked(j *job, action string) {
	if !s.opts.JobEvents || !j.listed() {
		return
	}
	event := "workflow_job_" + string(j.status)
	var body []byte
	for _, h := range s.hooksForRepoLocked(j.repo) {
		if len(h.cfg.Events) > 0 && !slices.Contains(h.cfg.Events, event) {
			continue
		}
		if body == nil {
			body = s.jobPayloadLocked(j, action)
		}
		s.queueDeliveryLocked(h, &Delivery{Event: event, Action: action, RunID: j.runID(), JobID: j.id, Payload: body})
	}
}

func (s *Server) jobPayloadLocked(j *job, action string) []byte {
	apiJob := s.apiJobLocked(j)
	return mustMarshal(WorkflowJobPayload{
		Action:     action,
		Job:        &apiJob,
		Run:        s.apiRunLocked(j.run),
		Repository: s.apiRepoLocked(j.repo),
	}, true)
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
		h.Set(vendor+"-Event", eventHeader(event))
		h.Set(vendor+"-Event-Type", event)
		h.Set(vendor+"-Signature", sig256)
	}
	h.Set("X-Hub-Signature", "sha1="+sig1)
	h.Set("X-Hub-Signature-256", "sha256="+sig256)
	// GitHub's spelling is not canonical MIME case, so it is set directly, as Forgejo does.
	h["X-GitHub-Delivery"] = []string{deliveryID}
	h["X-GitHub-Event"] = []string{eventHeader(event)}
	h["X-GitHub-Event-Type"] = []string{event}

	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("deliver to %s: %w", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}
