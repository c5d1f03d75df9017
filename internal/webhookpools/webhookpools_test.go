package webhookpools

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// apiServer is one API server for the package: every test works in a namespace of its own and
// lists pools through inNamespace.
var apiServer *cluster.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	c, err := cluster.Start(ctx, cluster.Options{APIServerOnly: true})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start the API server: %v\n", err)
		os.Exit(1)
	}
	apiServer = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the API server: %v\n", err)
	}
	os.Exit(code)
}

// inNamespace lists one namespace only, so that tests sharing the API server do not see each
// other's pools.
type inNamespace struct {
	client.Reader
	ns string
}

func (r inNamespace) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return r.Reader.List(ctx, list, append(opts, client.InNamespace(r.ns))...)
}

// fixture is a namespace of the shared API server with pools and Secrets in it.
type fixture struct {
	t  *testing.T
	ns string
	c  client.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ns := strings.ToLower(strings.NewReplacer("_", "-", "/", "-").Replace(t.Name()))
	if len(ns) > 60 {
		ns = ns[:60]
	}
	if err := apiServer.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ns: ns, c: apiServer.Client}
}

func (f *fixture) pools() client.Reader { return inNamespace{Reader: f.c, ns: f.ns} }

func (f *fixture) secret(name string, data map[string]string) {
	f.t.Helper()
	if err := f.c.Create(f.t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		StringData: data,
	}); err != nil {
		f.t.Fatal(err)
	}
}

// pool creates a pool; target is the organization or the repository of its scope, and
// secretName, when set, names its webhook Secret (key "secret").
func (f *fixture) pool(name string, scope v1alpha1.Scope, target, secretName string) *v1alpha1.RunnerPool {
	f.t.Helper()
	p := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: "https://forgejo.example", Scope: scope, TokenSecretRef: v1alpha1.SecretKeySelector{Name: "t"}},
			Labels:  []string{"docker"},
		},
	}
	switch scope {
	case v1alpha1.ScopeOrganization:
		p.Spec.Forgejo.Organization = target
	case v1alpha1.ScopeRepository:
		p.Spec.Forgejo.Repository = target
	}
	if secretName != "" {
		p.Spec.Forgejo.WebhookSecretRef = &v1alpha1.SecretKeySelector{Name: secretName, Key: "secret"}
	}
	if err := f.c.Create(f.t.Context(), p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func TestCovers(t *testing.T) {
	pool := func(scope v1alpha1.Scope, org, repo string) *v1alpha1.RunnerPool {
		p := &v1alpha1.RunnerPool{}
		p.Spec.Forgejo.Scope, p.Spec.Forgejo.Organization, p.Spec.Forgejo.Repository = scope, org, repo
		return p
	}
	cases := []struct {
		pool *v1alpha1.RunnerPool
		repo string
		want bool
	}{
		{pool(v1alpha1.ScopeGlobal, "", ""), "acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "acme", ""), "acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "acme", ""), "Acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "other", ""), "acme/app", false},
		{pool(v1alpha1.ScopeRepository, "", "acme/app"), "acme/app", true},
		{pool(v1alpha1.ScopeRepository, "", "acme/app"), "acme/other", false},
		{pool(v1alpha1.ScopeUser, "", ""), "acme/app", true},
	}
	for _, c := range cases {
		if got := Covers(c.pool, c.repo); got != c.want {
			t.Errorf("%s %s%s covers %s = %v, want %v", c.pool.Spec.Forgejo.Scope, c.pool.Spec.Forgejo.Organization, c.pool.Spec.Forgejo.Repository, c.repo, got, c.want)
		}
	}
}

// values returns the candidates' secret values.
func values(cs []webhook.Secret) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c.Value))
	}
	return out
}

func TestCandidatesChooseByScopeAndReadEachSecretOncePerTTL(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.secret("org-hook", map[string]string{"secret": "org-secret"})
	f.secret("repo-hook", map[string]string{"secret": "repo-secret"})
	f.pool("org", v1alpha1.ScopeOrganization, "acme", "org-hook")
	f.pool("repo", v1alpha1.ScopeRepository, "other/app", "repo-hook")

	reader := &cluster.CountingReader{Reader: f.c}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	secrets := &Secrets{Pools: f.pools(), SecretReader: reader, Shared: []byte("shared"), TTL: time.Minute, Now: func() time.Time { return now }}

	got, err := secrets.Candidates(ctx, "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(values(got), []string{"shared", "org-secret"}) {
		t.Fatalf("candidates for acme/app = %q, want the shared and the organization pool's secret", values(got))
	}
	if g := got[0].Grant.(*Grant); !g.OperatorWide || len(g.Pools) != 0 {
		t.Errorf("the shared secret grants %+v, want every pool", g)
	}
	if g := got[1].Grant.(*Grant); g.OperatorWide || !slices.Equal(g.Pools, []types.NamespacedName{{Namespace: f.ns, Name: "org"}}) {
		t.Errorf("the organization pool's secret grants %+v, want that pool only", g)
	}
	for range 50 {
		if _, err := secrets.Candidates(ctx, "acme/app"); err != nil {
			t.Fatal(err)
		}
	}
	if n := reader.Gets(); n != 1 {
		t.Fatalf("51 deliveries read the Secret %d times, want once within the TTL", n)
	}
	now = now.Add(2 * time.Minute)
	if _, err := secrets.Candidates(ctx, "acme/app"); err != nil {
		t.Fatal(err)
	}
	if n := reader.Gets(); n != 2 {
		t.Fatalf("after the TTL the Secret was read %d times in all, want 2", n)
	}
	if all, _ := secrets.Candidates(ctx, ""); len(all) != 3 {
		t.Fatalf("a delivery naming no repository gets %d candidates, want all 3", len(all))
	}
}

// A Secret that cannot be read is not asked for on every delivery: unauthenticated requests
// naming the pool's repository would otherwise each cost an API read.
func TestFailedSecretReadsAreCachedBriefly(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.pool("org", v1alpha1.ScopeOrganization, "acme", "missing-hook")
	reader := &cluster.CountingReader{Reader: f.c}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	secrets := &Secrets{Pools: f.pools(), SecretReader: reader, NegativeTTL: 10 * time.Second, Now: func() time.Time { return now }}
	for range 100 {
		got, err := secrets.Candidates(ctx, "acme/app")
		if err != nil || len(got) != 0 {
			t.Fatalf("candidates %q, %v; want none", values(got), err)
		}
	}
	if n := reader.Gets(); n != 1 {
		t.Fatalf("100 deliveries read the missing Secret %d times, want once", n)
	}
	// Once the Secret exists it is found within the negative TTL's span, not the TTL's.
	f.secret("missing-hook", map[string]string{"secret": "late"})
	now = now.Add(10 * time.Second)
	got, err := secrets.Candidates(ctx, "acme/app")
	if err != nil || !slices.Equal(values(got), []string{"late"}) {
		t.Fatalf("candidates after the Secret came: %q, %v; want [late]", values(got), err)
	}
	if n := reader.Gets(); n != 2 {
		t.Fatalf("the Secret was read %d times in all, want 2", n)
	}
}

// A Secret made with `kubectl create secret --from-file` from a file `echo` wrote ends in a
// newline that Forgejo's secret does not have.
func TestSecretValuesLoseOneTrailingNewline(t *testing.T) {
	f := newFixture(t)
	f.secret("lf", map[string]string{"secret": "lf-secret\n"})
	f.secret("crlf", map[string]string{"secret": "crlf-secret\r\n"})
	f.secret("two", map[string]string{"secret": "two-secret\n\n"})
	f.secret("only-newline", map[string]string{"secret": "\n"})
	f.pool("lf", v1alpha1.ScopeRepository, "acme/lf", "lf")
	f.pool("crlf", v1alpha1.ScopeRepository, "acme/crlf", "crlf")
	f.pool("two", v1alpha1.ScopeRepository, "acme/two", "two")
	f.pool("only-newline", v1alpha1.ScopeRepository, "acme/only-newline", "only-newline")
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, prefix+" "+args)
	}, funcr.Options{})
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	secrets := &Secrets{Pools: f.pools(), SecretReader: f.c, Log: log, Now: func() time.Time { return now }}
	for repo, want := range map[string][]string{
		"acme/lf": {"lf-secret"}, "acme/crlf": {"crlf-secret"}, "acme/two": {"two-secret\n"}, "acme/only-newline": nil,
	} {
		got, err := secrets.Candidates(t.Context(), repo)
		if err != nil || !slices.Equal(values(got), want) {
			t.Errorf("%s: candidates %q, %v; want %q", repo, values(got), err, want)
		}
	}
	// Read again after the TTL: the log says it once per Secret.
	now = now.Add(time.Hour)
	if _, err := secrets.Candidates(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 3 {
		t.Fatalf("log lines %q, want one per trimmed Secret (lf, crlf, two)", lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, "trimmed") || strings.Contains(l, "-secret") {
			t.Errorf("log line %q should say it trimmed and hold no secret", l)
		}
	}
}

// call is one request the Sink made of the watcher, and what the watcher answered.
type call struct {
	method string
	url    string
	pools  []types.NamespacedName
	job    string
	asked  int
}

// recordingWatcher passes each call to the real watcher and records it with the answer.
type recordingWatcher struct {
	w     *jobwatch.Watcher
	mu    sync.Mutex
	calls []call
}

func (r *recordingWatcher) Trigger(url string, repo jobwatch.RepositoryRef, cause string) int {
	n := r.w.Trigger(url, repo, cause)
	r.record(call{method: "Trigger", url: url, asked: n})
	return n
}

func (r *recordingWatcher) TriggerPools(pools []types.NamespacedName, repo jobwatch.RepositoryRef, cause string) int {
	n := r.w.TriggerPools(pools, repo, cause)
	r.record(call{method: "TriggerPools", pools: slices.Clone(pools), asked: n})
	return n
}

func (r *recordingWatcher) Offer(url, repository string, job jobwatch.Job) bool {
	ok := r.w.Offer(url, repository, job)
	r.record(call{method: "Offer", url: url, job: job.Handle})
	return ok
}

func (r *recordingWatcher) OfferPools(pools []types.NamespacedName, job jobwatch.Job) bool {
	ok := r.w.OfferPools(pools, job)
	r.record(call{method: "OfferPools", pools: slices.Clone(pools), job: job.Handle})
	return ok
}

func (r *recordingWatcher) record(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recordingWatcher) take() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func sign(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// TestPoolSecretsActOnTheirOwnPoolsOnly drives the receiver as the operator wires it: the
// handler, these Secrets and this Sink, and a real jobs watcher holding a connection per pool.
func TestPoolSecretsActOnTheirOwnPoolsOnly(t *testing.T) {
	f := newFixture(t)
	f.secret("user-hook", map[string]string{"secret": "user-secret"})
	f.secret("acme-hook", map[string]string{"secret": "acme-secret"})
	f.secret("app-hook", map[string]string{"secret": "app-secret"})
	// Another Secret with the same value: whoever holds it holds both pools.
	f.secret("app-hook-copy", map[string]string{"secret": "app-secret"})
	f.secret("lib-hook", map[string]string{"secret": "lib-secret"})
	pools := []*v1alpha1.RunnerPool{
		f.pool("user", v1alpha1.ScopeUser, "", "user-hook"),
		f.pool("acme", v1alpha1.ScopeOrganization, "acme", "acme-hook"),
		f.pool("app", v1alpha1.ScopeRepository, "acme/app", "app-hook"),
		f.pool("app-twin", v1alpha1.ScopeRepository, "acme/app", "app-hook-copy"),
		f.pool("lib", v1alpha1.ScopeRepository, "acme/lib", "lib-hook"),
		f.pool("nohook", v1alpha1.ScopeOrganization, "acme", ""),
	}
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: f.ns, Name: name} }

	// Not started: the watcher answers how many connections it asked and polls nothing.
	real := jobwatch.New(time.Hour, func(types.NamespacedName) {}, logr.Discard())
	for _, p := range pools {
		scope := string(p.Spec.Forgejo.Scope)
		if t := p.Spec.Forgejo.Organization + p.Spec.Forgejo.Repository; t != "" {
			scope += " " + t
		}
		real.Register(matching.PoolOf(p), jobwatch.NewConnection("https://forgejo.example", scope, "token-of-"+p.Name), nil)
	}
	watcher := &recordingWatcher{w: real}
	h, err := webhook.New(webhook.Options{
		Secrets: &Secrets{Pools: f.pools(), SecretReader: f.c, Shared: []byte("operator-secret")},
		Sink:    &Sink{Pools: f.pools(), Watcher: watcher, Log: logr.Discard()},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	send := func(key, event, repo string) int {
		n++
		var body []byte
		if strings.HasPrefix(event, "workflow_job") {
			body = fmt.Appendf(nil, `{"action":"new_job_attempt","job":{"id":%d,"handle":"h-%d","status":"waiting","runs_on":["docker"],"repo_id":7,"owner_id":3},"repository":{"full_name":%q}}`, n, n, repo)
		} else {
			body = fmt.Appendf(nil, `{"ref":"refs/heads/main","after":"%040d","repository":{"id":7,"full_name":%q,"owner":{"id":3}}}`, n, repo)
		}
		req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(body)))
		req.Header.Set("X-Forgejo-Event-Type", event)
		req.Header.Set("X-Forgejo-Delivery", fmt.Sprintf("d-%d", n))
		req.Header.Set("X-Forgejo-Signature", sign(key, body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	pushes := []struct {
		name   string
		secret string
		event  string
		repo   string
		status int
		want   []call
	}{
		{"a user pool's secret, about an organization's repository", "user-secret", "push", "acme/app", http.StatusAccepted,
			[]call{{method: "TriggerPools", pools: []types.NamespacedName{key("user")}, asked: 1}}},
		{"a user pool's secret, with an organization's job", "user-secret", "workflow_job_waiting", "acme/app", http.StatusAccepted,
			[]call{{method: "TriggerPools", pools: []types.NamespacedName{key("user")}, asked: 1}}},
		{"a repository pool's secret, about another repository", "app-secret", "push", "acme/lib", http.StatusUnauthorized, nil},
		{"an organization pool's secret, about another organization", "acme-secret", "push", "other/app", http.StatusUnauthorized, nil},
		{"a repository pool's secret, about its repository", "app-secret", "push", "acme/app", http.StatusAccepted,
			[]call{{method: "TriggerPools", pools: []types.NamespacedName{key("app"), key("app-twin")}, asked: 2}}},
		{"an organization pool's secret, about its repository", "acme-secret", "push", "acme/lib", http.StatusAccepted,
			[]call{{method: "TriggerPools", pools: []types.NamespacedName{key("acme")}, asked: 1}}},
		// user, acme, app, app-twin and nohook cover acme/app; lib does not.
		{"the operator-wide secret", "operator-secret", "push", "acme/app", http.StatusAccepted,
			[]call{{method: "Trigger", url: "https://forgejo.example", asked: 5}}},
		{"the operator-wide secret, with a job", "operator-secret", "workflow_job_waiting", "acme/app", http.StatusAccepted,
			[]call{{method: "Offer", url: "https://forgejo.example", job: "h-8"}}},
	}
	for _, c := range pushes {
		if code := send(c.secret, c.event, c.repo); code != c.status {
			t.Errorf("%s: status %d, want %d", c.name, code, c.status)
		}
		if got := watcher.take(); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: the watcher was asked\n  %+v\nwant\n  %+v", c.name, got, c.want)
		}
	}
}

// A delivery that reaches the Sink without a Grant of this package acts on nothing.
func TestDeliveriesWithoutAGrantActOnNothing(t *testing.T) {
	watcher := &recordingWatcher{w: jobwatch.New(time.Hour, func(types.NamespacedName) {}, logr.Discard())}
	s := &Sink{Pools: nil, Watcher: watcher, Log: logr.Discard()}
	s.HandleRepositoryEvent(t.Context(), webhook.RepositoryEvent{Repository: "acme/app"})
	s.HandleJobEvent(t.Context(), webhook.JobEvent{Event: "workflow_job_waiting", Job: webhook.Job{Handle: "h"}, Grant: "not a grant"})
	if got := watcher.take(); len(got) != 0 {
		t.Fatalf("the watcher was asked %+v", got)
	}
}
