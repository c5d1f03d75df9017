package forgejosim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultVersion is what GET /api/v1/version answers unless Options.Version says otherwise.
const DefaultVersion = "15.0.0+sim"

// AdminUserName is the site administrator the admin token belongs to; /api/v1/user/... routes
// called with an instance-scope token act on this user's runners.
const AdminUserName = "forgejo-admin"

// Options configure a Server. The zero value is usable.
type Options struct {
	// AdminToken authenticates the /_sim/ control API and is also an instance-scope (site
	// administrator) API token. Empty: a random one is made; read it with Server.AdminToken.
	AdminToken string
	// Version is the Forgejo version reported by /api/v1/version. A major version below 15 makes
	// the simulator behave like an older Forgejo: no registration API, no FetchSingleTask.
	Version string
	// Now is the clock; nil means time.Now. Tests inject a fixed or stepping clock.
	Now func() time.Time
	// Seed makes identifiers, tokens, handles and fault decisions reproducible when non-zero;
	// zero draws them from crypto/rand.
	Seed uint64
	// PublicURL is the instance's root URL used in Link headers, html_url fields and error
	// bodies. Empty: derived from each request's Host.
	PublicURL string
	// RunnerOfflineAfter is how long after its last call a runner still counts as online; Forgejo
	// uses one minute (models/actions/runner.go RunnerOfflineTime). Zero means one minute.
	RunnerOfflineAfter time.Duration
	// WebhookMaxAttempts bounds delivery attempts per webhook delivery. Forgejo sends each
	// delivery once and never retries it (services/webhook/deliver.go; a retry is a manual
	// "redeliver"), so the default is 1; tests that want a flaky receiver to recover raise it.
	WebhookMaxAttempts int
	// WebhookRetryBase is the wait before the first retry; it doubles for each later retry
	// (default 200ms, capped at 5s).
	WebhookRetryBase time.Duration
	// JobEvents makes the simulator behave as a newer server (Gitea 1.24+, a later Forgejo) that
	// also sends workflow_job_* deliveries when a job is queued, changes status or completes.
	// Forgejo 15 has no such event (modules/webhook/type.go), so it is off by default.
	JobEvents bool
	// DeliveryRaceProbability (0..1) is the chance, drawn from Seed, that a queued run's push
	// delivery is sent before the run's jobs are in the jobs list: they appear DeliveryRaceDelay
	// later. Forgejo queues the delivery and inserts the run in the same request, so a fast
	// receiver can poll before the insertion is visible. Zero (the default) never races.
	DeliveryRaceProbability float64
	// DeliveryRaceDelay is how long a raced run stays unlisted (default 200ms).
	DeliveryRaceDelay time.Duration
	// WebhookTimeout bounds one delivery attempt (default 5s).
	WebhookTimeout time.Duration
	// HTTPClient sends webhook deliveries; nil means a client with WebhookTimeout.
	HTTPClient *http.Client
	// Logf, when set, receives one line per notable event (deliveries, injected faults).
	Logf func(format string, args ...any)
}

// Server is the simulated Forgejo. It is an http.Handler; all methods are safe for concurrent use.
type Server struct {
	opts Options
	now  func() time.Time

	mu           sync.Mutex
	rng          *mathrand.Rand // nil: crypto/rand
	version      string
	nextID       map[string]int64
	owners       map[string]*owner // by lower-case name
	ownersByID   map[int64]*owner
	repos        map[string]*repository // by lower-case "owner/name"
	reposByID    map[int64]*repository
	tokens       map[string]Scope // by sha256 of the token
	runners      map[int64]*runner
	runnerByUUID map[string]*runner
	runs         map[int64]*run
	jobs         map[int64]*job
	tasks        map[int64]*task
	hooks        map[int64]*hook
	deliveries   []*Delivery
	faults       []Fault
	hookFaults   WebhookFaults
	// tasksVersions are Forgejo's action_tasks_version rows: one per scope (instance, owner,
	// repository), moved when a job becomes waiting or a task ends.
	tasksVersions map[scopeKey]int64
	// regTokens are the deprecated registration tokens, one per scope.
	regTokens   map[scopeKey]string
	seenBaseURL string // the instance URL of the last request, for payloads
	// oidc holds the Actions token secrets (oidc.go); it has its own locking.
	oidc oidcState

	mux *http.ServeMux

	// Webhook delivery goroutines stop on ctx and are awaited by Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	client *http.Client
}

// New returns a Server ready to serve.
func New(opts Options) *Server {
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.RunnerOfflineAfter <= 0 {
		opts.RunnerOfflineAfter = defaultRunnerOfflineAfter
	}
	if opts.WebhookMaxAttempts <= 0 {
		opts.WebhookMaxAttempts = 1
	}
	if opts.DeliveryRaceDelay <= 0 {
		opts.DeliveryRaceDelay = 200 * time.Millisecond
	}
	if opts.WebhookRetryBase <= 0 {
		opts.WebhookRetryBase = 200 * time.Millisecond
	}
	if opts.WebhookTimeout <= 0 {
		opts.WebhookTimeout = 5 * time.Second
	}
	opts.PublicURL = strings.TrimRight(opts.PublicURL, "/")
	s := &Server{
		opts:          opts,
		now:           opts.Now,
		version:       opts.Version,
		nextID:        map[string]int64{},
		owners:        map[string]*owner{},
		ownersByID:    map[int64]*owner{},
		repos:         map[string]*repository{},
		reposByID:     map[int64]*repository{},
		tokens:        map[string]Scope{},
		runners:       map[int64]*runner{},
		runnerByUUID:  map[string]*runner{},
		runs:          map[int64]*run{},
		jobs:          map[int64]*job{},
		tasksVersions: map[scopeKey]int64{},
		regTokens:     map[scopeKey]string{},
		tasks:         map[int64]*task{},
		hooks:         map[int64]*hook{},
		client:        opts.HTTPClient,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Seed != 0 {
		s.rng = mathrand.New(mathrand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: opts.WebhookTimeout}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	s.mu.Lock()
	s.ensureOwnerLocked(AdminUserName, ownerUser)
	if s.opts.AdminToken == "" {
		s.opts.AdminToken = s.randomHexLocked(20)
	}
	s.tokens[hashToken(s.opts.AdminToken)] = InstanceScope()
	s.mu.Unlock()

	s.mux = http.NewServeMux()
	s.routeAPI()
	s.routeRunnerProtocol()
	s.routeOIDC()
	s.routeControl()
	return s
}

// AdminToken returns the token that authenticates the control API and the instance-scope API.
func (s *Server) AdminToken() string { return s.opts.AdminToken }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.PublicURL == "" {
		base := s.publicURL(r)
		s.mu.Lock()
		s.seenBaseURL = base
		s.mu.Unlock()
	}
	s.mux.ServeHTTP(w, r)
}

// Close stops webhook deliveries in flight (pending retries are abandoned) and waits for them.
func (s *Server) Close() {
	// Cancelling under the lock orders it against emitJobEventLocked's wg.Add.
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func (s *Server) nextIDLocked(kind string) int64 {
	s.nextID[kind]++
	return s.nextID[kind]
}

func (s *Server) randomBytesLocked(n int) []byte {
	b := make([]byte, n)
	if s.rng == nil {
		if _, err := rand.Read(b); err != nil {
			// crypto/rand does not fail on supported platforms; a simulator may simply stop.
			panic(fmt.Sprintf("crypto/rand: %v", err))
		}
		return b
	}
	for i := 0; i < n; i += 8 {
		var chunk [8]byte
		binary.LittleEndian.PutUint64(chunk[:], s.rng.Uint64())
		copy(b[i:], chunk[:])
	}
	return b
}

func (s *Server) randomHexLocked(n int) string { return hex.EncodeToString(s.randomBytesLocked(n)) }

// uuidLocked returns a version 4 UUID, the form Forgejo uses for runner UUIDs, job handles and
// delivery ids.
func (s *Server) uuidLocked() string {
	b := s.randomBytesLocked(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// chanceLocked reports true with probability p.
func (s *Server) chanceLocked(p float64) bool {
	switch {
	case p <= 0:
		return false
	case p >= 1:
		return true
	case s.rng != nil:
		return s.rng.Float64() < p
	default:
		return float64(binary.LittleEndian.Uint64(s.randomBytesLocked(8))>>11)/(1<<53) < p
	}
}

// hashToken is how secrets are kept: a runner or API token is only ever compared, never shown
// again, so only its digest is stored.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type ownerKind int

const (
	ownerUser ownerKind = iota
	ownerOrganization
)

type owner struct {
	id      int64
	name    string
	kind    ownerKind
	created time.Time
	// visibility is public, limited or private (structs.VisibleType); public unless changed with
	// SetOrganizationVisibility, as Forgejo's DEFAULT_ORG_VISIBILITY and users default to.
	visibility string
}

type repository struct {
	id       int64
	owner    *owner
	name     string
	created  time.Time
	runIndex int64  // the last run's index (action_run_index)
	headSHA  string // the default branch's head, moved by every simulated push
}

// scopeKey is Forgejo's (owner_id, repo_id) pair of a scope: (0, 0) for the instance.
type scopeKey struct{ ownerID, repoID int64 }

// The simulated repositories' default branch, and git's all-zero object id.
const (
	defaultBranch = "main"
	zeroSHA       = "0000000000000000000000000000000000000000"
)

func (r *repository) fullName() string { return r.owner.name + "/" + r.name }

// ensureOwnerLocked returns the user or organization named name, creating it with kind if it does
// not exist yet. Users and organizations share one id sequence, as in Forgejo.
func (s *Server) ensureOwnerLocked(name string, kind ownerKind) *owner {
	if o, ok := s.owners[strings.ToLower(name)]; ok {
		return o
	}
	o := &owner{id: s.nextIDLocked("user"), name: name, kind: kind, created: s.now(), visibility: VisibilityPublic}
	s.owners[strings.ToLower(name)] = o
	s.ownersByID[o.id] = o
	return o
}

// ensureRepoLocked returns the repository "owner/name", creating it (and its owner, as an
// organization when unknown) if needed.
func (s *Server) ensureRepoLocked(fullName string) (*repository, error) {
	ownerName, name, ok := strings.Cut(fullName, "/")
	if !ok || ownerName == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("repository %q: want owner/name", fullName)
	}
	if r, ok := s.repos[strings.ToLower(fullName)]; ok {
		return r, nil
	}
	o := s.ensureOwnerLocked(ownerName, ownerOrganization)
	r := &repository{id: s.nextIDLocked("repo"), owner: o, name: name, created: s.now()}
	s.repos[strings.ToLower(r.fullName())] = r
	s.reposByID[r.id] = r
	return r, nil
}

func (s *Server) findOwnerLocked(name string) *owner { return s.owners[strings.ToLower(name)] }

func (s *Server) findRepoLocked(ownerName, name string) *repository {
	return s.repos[strings.ToLower(ownerName+"/"+name)]
}

// EnsureOrganization creates the organization name if it does not exist.
func (s *Server) EnsureOrganization(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.findOwnerLocked(name); o != nil && o.kind != ownerOrganization {
		return fmt.Errorf("%q exists and is a user, not an organization", name)
	}
	s.ensureOwnerLocked(name, ownerOrganization)
	return nil
}

// EnsureUser creates the user name if it does not exist.
func (s *Server) EnsureUser(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.findOwnerLocked(name); o != nil && o.kind != ownerUser {
		return fmt.Errorf("%q exists and is an organization, not a user", name)
	}
	s.ensureOwnerLocked(name, ownerUser)
	return nil
}

// EnsureRepository creates the repository "owner/name" if it does not exist; an unknown owner is
// created as an organization (call EnsureUser first for a user's repository).
func (s *Server) EnsureRepository(fullName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.ensureRepoLocked(fullName)
	return err
}

// SetVersion changes the version the server reports and behaves as.
func (s *Server) SetVersion(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version = v
}

// supportsRegistrationAPILocked reports whether the simulated version has Forgejo 15's runner
// registration API and FetchSingleTask.
func (s *Server) supportsRegistrationAPILocked() bool { return majorVersion(s.version) >= 15 }

func majorVersion(v string) int {
	v = strings.TrimPrefix(v, "v")
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// publicURL is the root URL of the instance as seen by the caller of r.
func (s *Server) publicURL(r *http.Request) string {
	if s.opts.PublicURL != "" {
		return s.opts.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
