package forgejosim_test

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// The OpenBao side is read from docs/oidc.md, so that what is tested is what users are told to
// configure; the documentation's Forgejo host is replaced by the simulator's.
const (
	oidcDoc         = "../../docs/oidc.md"
	docForgejoURL   = "https://forgejo.example.com"
	docRoleName     = "acme-app-main"
	docAudience     = "https://bao.example.com"
	defaultLeeway   = 150 * time.Second // OpenBao's expiration_leeway and not_before_leeway defaults
	forgejoLifetime = 3600 * time.Second
)

// baoRole is the part of an OpenBao JWT auth role (auth/jwt/role/:name) the documented role
// sets. Decoding is strict: a field the documentation adds must be modelled here first.
type baoRole struct {
	RoleType        string            `json:"role_type"`
	BoundAudiences  []string          `json:"bound_audiences"`
	BoundSubject    string            `json:"bound_subject"`
	BoundClaimsType string            `json:"bound_claims_type"`
	BoundClaims     map[string]any    `json:"bound_claims"`
	UserClaim       string            `json:"user_claim"`
	ClaimMappings   map[string]string `json:"claim_mappings"`
	TokenPolicies   []string          `json:"token_policies"`
	TokenTTL        string            `json:"token_ttl"`
	TokenMaxTTL     string            `json:"token_max_ttl"`
}

// bao is a stand-in for OpenBao's JWT auth method configured as docs/oidc.md says: it discovers
// the issuer's keys with go-oidc and applies the role's bindings as OpenBao's login does
// (signature, bound_issuer, bound_audiences, exp and nbf with the default leeways,
// bound_subject, bound_claims, user_claim, claim_mappings).
type bao struct {
	discoveryURL string
	boundIssuer  string
	role         baoRole
	provider     *oidc.Provider
	now          func() time.Time
}

// baoLogin is what a successful login yields.
type baoLogin struct {
	alias    string
	metadata map[string]string
	policies []string
}

func newBao(t *testing.T, forgejoURL string, now func() time.Time) *bao {
	t.Helper()
	doc, err := os.ReadFile(oidcDoc)
	mustNoErr(t, err, "read "+oidcDoc)
	text := strings.ReplaceAll(string(doc), docForgejoURL, forgejoURL)

	b := &bao{now: now}
	configRe := regexp.MustCompile(`(?s)bao write auth/jwt/config \\\n\s+oidc_discovery_url="([^"]+)" \\\n\s+bound_issuer="([^"]+)"`)
	m := configRe.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("%s: no `bao write auth/jwt/config` with oidc_discovery_url and bound_issuer", oidcDoc)
	}
	b.discoveryURL, b.boundIssuer = m[1], m[2]

	roleRe := regexp.MustCompile(`(?s)bao write auth/jwt/role/` + docRoleName + ` - <<'EOF'\n(.*?)\nEOF`)
	m = roleRe.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("%s: no role %s written from a JSON here-document", oidcDoc, docRoleName)
	}
	dec := json.NewDecoder(strings.NewReader(m[1]))
	dec.DisallowUnknownFields()
	mustNoErr(t, dec.Decode(&b.role), "decode the documented role")
	if b.role.RoleType != "jwt" || b.role.BoundClaimsType != "string" {
		t.Fatalf("documented role: role_type %q, bound_claims_type %q; the test models jwt and string", b.role.RoleType, b.role.BoundClaimsType)
	}

	// OpenBao fetches <oidc_discovery_url>/.well-known/openid-configuration and insists that its
	// issuer is oidc_discovery_url; go-oidc's NewProvider does the same.
	b.provider, err = oidc.NewProvider(t.Context(), b.discoveryURL)
	mustNoErr(t, err, "discover the issuer as OpenBao would")
	return b
}

func (b *bao) login(ctx context.Context, raw string) (baoLogin, error) {
	// Signature (against the discovered JWKS, RS256 only) and issuer. Expiry and audience are
	// OpenBao's own checks below, with its leeway and its any-of audience rule.
	idt, err := b.provider.Verifier(&oidc.Config{
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SupportedSigningAlgs: []string{oidc.RS256},
		Now:                  b.now,
	}).Verify(ctx, raw)
	if err != nil {
		return baoLogin{}, fmt.Errorf("verify: %w", err)
	}
	if idt.Issuer != b.boundIssuer {
		return baoLogin{}, fmt.Errorf("issuer %q is not bound_issuer %q", idt.Issuer, b.boundIssuer)
	}
	now := b.now()
	if now.After(idt.Expiry.Add(defaultLeeway)) {
		return baoLogin{}, fmt.Errorf("token is expired (exp %s, now %s)", idt.Expiry, now)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return baoLogin{}, fmt.Errorf("claims: %w", err)
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Add(defaultLeeway).Before(time.Unix(int64(nbf), 0)) {
		return baoLogin{}, errors.New("token is not yet valid")
	}
	if !slices.ContainsFunc(idt.Audience, func(a string) bool { return slices.Contains(b.role.BoundAudiences, a) }) {
		return baoLogin{}, fmt.Errorf("aud %v matches no bound audience", idt.Audience)
	}
	if b.role.BoundSubject != "" && idt.Subject != b.role.BoundSubject {
		return baoLogin{}, fmt.Errorf("sub %q does not match bound subject", idt.Subject)
	}
	for name, want := range b.role.BoundClaims {
		got, ok := claims[name].(string)
		if !ok || !boundValueMatches(want, got) {
			return baoLogin{}, fmt.Errorf("claim %q is %v, which does not match the bound value %v", name, claims[name], want)
		}
	}
	alias, ok := claims[b.role.UserClaim].(string)
	if !ok || alias == "" {
		return baoLogin{}, fmt.Errorf("user claim %q missing", b.role.UserClaim)
	}
	md := map[string]string{}
	for claim, key := range b.role.ClaimMappings {
		if v, ok := claims[claim].(string); ok {
			md[key] = v
		}
	}
	return baoLogin{alias: alias, metadata: md, policies: b.role.TokenPolicies}, nil
}

// boundValueMatches is a "string" bound claim: the value, or one of a list of values.
func boundValueMatches(want any, got string) bool {
	switch w := want.(type) {
	case string:
		return w == got
	case []any:
		return slices.ContainsFunc(w, func(x any) bool { return x == got })
	}
	return false
}

// oidcTask is one task of a job as a runner got it, with what the runner exports to its steps.
type oidcTask struct {
	task       *runnerv1.Task
	runner     *simRunner
	requestURL string // ACTIONS_ID_TOKEN_REQUEST_URL
	reqToken   string // ACTIONS_ID_TOKEN_REQUEST_TOKEN
	runtime    string // ACTIONS_RUNTIME_TOKEN
}

// take runs job j to its task with an ephemeral instance runner started for its handle, as the
// operator's pods do.
func (e *env) take(j forgejosim.Job) oidcTask {
	e.t.Helper()
	reg := e.register(adminPrefix, adminToken, fmt.Sprintf("oidc-%d", j.ID), true)
	r := e.runner(reg, j.RunsOn...)
	task, err := r.fetchSingle(j.Handle)
	mustNoErr(e.t, err, "fetch the job's task")
	if task == nil {
		e.t.Fatalf("job %d: no task", j.ID)
	}
	f := task.GetContext().GetFields()
	return oidcTask{
		task: task, runner: r,
		requestURL: f["forgejo_actions_id_token_request_url"].GetStringValue(),
		reqToken:   f["forgejo_actions_id_token_request_token"].GetStringValue(),
		runtime:    f["gitea_runtime_token"].GetStringValue(),
	}
}

// requestIDToken asks for an ID token as a step does (actions/core getIDToken, or curl in
// docs/oidc.md): GET the request URL, with &audience= when one is wanted, and the request token
// as a bearer token. It returns the status, the body and, on 200, the token.
func requestIDToken(t *testing.T, requestURL, authorization, audience string) (int, string, string) {
	t.Helper()
	if audience != "" {
		requestURL += "&audience=" + url.QueryEscape(audience)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, requestURL, nil)
	mustNoErr(t, err, "new request")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	mustNoErr(t, err, "GET "+requestURL)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	mustNoErr(t, err, "read body")
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(body), ""
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json;charset=utf-8" {
		t.Errorf("id token content type %q, want Forgejo's application/json;charset=utf-8", ct)
	}
	var out struct {
		Value string `json:"value"`
	}
	mustNoErr(t, json.Unmarshal(body, &out), "decode "+string(body))
	return resp.StatusCode, string(body), out.Value
}

func mustIDToken(t *testing.T, tk oidcTask, audience string) string {
	t.Helper()
	status, body, tok := requestIDToken(t, tk.requestURL, "Bearer "+tk.reqToken, audience)
	if status != http.StatusOK || tok == "" {
		t.Fatalf("id token: status %d, body %q", status, body)
	}
	return tok
}

func unverifiedClaims(t *testing.T, raw string) (jwt.MapClaims, map[string]any) {
	t.Helper()
	claims := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(raw, claims)
	mustNoErr(t, err, "parse id token")
	return claims, tok.Header
}

func enabled(b bool) *bool { return &b }

// TestOIDCDiscovery checks the issuer's endpoints against Forgejo's own integration test
// (tests/integration/api_actions_oidc_test.go) and the key's form (modules/jwtx/signingkey.go).
func TestOIDCDiscovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var cfg map[string]any
	resp := e.expect(http.MethodGet, "/api/actions/.well-known/openid-configuration", "", nil, http.StatusOK, &cfg)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json;charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	want := map[string]any{
		"issuer":                                e.url + "/api/actions",
		"jwks_uri":                              e.url + "/api/actions/.well-known/keys",
		"subject_types_supported":               []any{"public"},
		"response_types_supported":              []any{"id_token"},
		"claims_supported":                      []any{"sub", "aud", "exp", "iat", "iss", "nbf", "actor", "base_ref", "event_name", "head_ref", "ref", "ref_protected", "ref_type", "repository", "repository_owner", "run_attempt", "run_id", "run_number", "sha", "workflow", "workflow_ref"},
		"id_token_signing_alg_values_supported": []any{"RS256"},
		"scopes_supported":                      []any{"openid"},
	}
	if got, _ := json.Marshal(cfg); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("openid-configuration\n got %s\nwant %s", got, must(json.Marshal(want)))
	}

	jwks := fetchJWKS(t, e)
	key := jwks[0]
	for k, v := range map[string]string{"kty": "RSA", "alg": "RS256", "use": "sig"} {
		if key[k] != v {
			t.Errorf("jwk %s = %q, want %q", k, key[k], v)
		}
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(must(base64.RawURLEncoding.DecodeString(key["n"]))),
		E: int(new(big.Int).SetBytes(must(base64.RawURLEncoding.DecodeString(key["e"]))).Int64())}
	if pub.N.BitLen() != 2048 || pub.E != 65537 {
		t.Errorf("key: %d bits, e=%d; Forgejo makes 2048-bit keys with e=65537 for RS256", pub.N.BitLen(), pub.E)
	}
	sum := sha256.Sum256(must(x509.MarshalPKIXPublicKey(pub)))
	if kid := base64.RawURLEncoding.EncodeToString(sum[:]); key["kid"] != kid {
		t.Errorf("kid %q, want the SHA-256 fingerprint %q", key["kid"], kid)
	}

	// The key is the seed's: the same for the same seed, another for another seed or none.
	if again := fetchJWKS(t, newEnv(t))[0]; again["n"] != key["n"] {
		t.Error("two simulators with the same seed have different keys")
	}
	if other := fetchJWKS(t, newEnv(t, func(o *forgejosim.Options) { o.Seed = 2 }))[0]; other["n"] == key["n"] {
		t.Error("two seeds gave the same key")
	}
	if random := fetchJWKS(t, newEnv(t, func(o *forgejosim.Options) { o.Seed = 0 }))[0]; random["n"] == key["n"] {
		t.Error("an unseeded simulator has the seeded key")
	}
}

func fetchJWKS(t *testing.T, e *env) []map[string]string {
	t.Helper()
	var jwks map[string][]map[string]string
	e.expect(http.MethodGet, "/api/actions/.well-known/keys", "", nil, http.StatusOK, &jwks)
	if len(jwks["keys"]) != 1 || len(jwks) != 1 {
		t.Fatalf("jwks %v: want exactly one key", jwks)
	}
	return jwks["keys"]
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestOIDCOpenBaoRole runs jobs to their tasks, gets their ID tokens as a step does and logs in
// with them as the OpenBao role in docs/oidc.md would.
func TestOIDCOpenBaoRole(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := newEnv(t, func(o *forgejosim.Options) { o.Now = clk.Now })
	app := e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/app", Workflow: "deploy.yml", EnableOpenIDConnect: true,
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}},
	}).Jobs[0]
	other := e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/other", Workflow: "deploy.yml", EnableOpenIDConnect: true,
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}},
	}).Jobs[0]
	appTask, otherTask := e.take(app), e.take(other)

	// What the runner exports: the request token is the task's runtime token, the URL the
	// run's idtoken route under ROOT_URL (services/actions/task.go).
	if appTask.reqToken == "" || appTask.reqToken != appTask.runtime {
		t.Fatalf("request token %q, runtime token %q: want the same, non-empty", appTask.reqToken, appTask.runtime)
	}
	if want := fmt.Sprintf("%s/api/actions/_apis/pipelines/workflows/%d/idtoken?placeholder=true", e.url, app.RunID); appTask.requestURL != want {
		t.Fatalf("request URL %q, want %q", appTask.requestURL, want)
	}
	if !strings.HasSuffix(string(appTask.task.GetWorkflowPayload()), "enable-openid-connect: true\n") {
		t.Errorf("workflow payload does not carry enable-openid-connect:\n%s", appTask.task.GetWorkflowPayload())
	}

	b := newBao(t, e.url, clk.Now)
	issued := clk.Now()
	raw := mustIDToken(t, appTask, docAudience)

	claims, header := unverifiedClaims(t, raw)
	if header["alg"] != "RS256" || header["kid"] != fetchJWKS(t, e)[0]["kid"] {
		t.Errorf("header %v: want RS256 and the JWKS key's kid", header)
	}
	fields := appTask.task.GetContext().GetFields()
	wantClaims := map[string]any{
		"iss": e.url + "/api/actions", "aud": docAudience, "sub": "repo:acme/app:ref:refs/heads/main",
		"iat": float64(issued.Unix()), "nbf": float64(issued.Unix()), "exp": float64(issued.Add(forgejoLifetime).Unix()),
		"actor": "acme", "base_ref": "", "head_ref": "", "event_name": "push",
		"ref": "refs/heads/main", "ref_protected": "false", "ref_type": "branch",
		"repository": "acme/app", "repository_owner": "acme",
		"run_attempt": "1", "run_id": fmt.Sprint(app.RunID), "run_number": "1",
		"sha": fields["sha"].GetStringValue(), "workflow": "deploy.yml",
		"workflow_ref": "acme/app/.forgejo/workflows/deploy.yml@refs/heads/main",
	}
	if got, want := must(json.Marshal(claims)), must(json.Marshal(wantClaims)); string(got) != string(want) {
		t.Errorf("claims\n got %s\nwant %s", got, want)
	}
	if len(fields["sha"].GetStringValue()) != 40 {
		t.Errorf("sha %q is not a commit id", fields["sha"].GetStringValue())
	}

	login, err := b.login(t.Context(), raw)
	mustNoErr(t, err, "OpenBao login with acme/app's token")
	if login.alias != "acme/app" || login.metadata["run_id"] != fmt.Sprint(app.RunID) || !slices.Equal(login.policies, []string{"acme-app-deploy"}) {
		t.Errorf("login %+v: want alias acme/app, its run id in the metadata, policy acme-app-deploy", login)
	}

	// Another repository's job gets a valid token of its own, which the role refuses...
	otherRaw := mustIDToken(t, otherTask, docAudience)
	if _, err := b.provider.Verifier(&oidc.Config{ClientID: docAudience, Now: clk.Now}).Verify(t.Context(), otherRaw); err != nil {
		t.Fatalf("acme/other's token does not even verify: %v", err)
	}
	if _, err := b.login(t.Context(), otherRaw); err == nil || !strings.Contains(err.Error(), "bound subject") {
		t.Errorf("login with acme/other's token: %v, want refused for its subject", err)
	}
	// ...and cannot get one for acme/app's run: its request token is bound to its own run.
	appRunURL := strings.Replace(otherTask.requestURL, fmt.Sprintf("/workflows/%d/", other.RunID), fmt.Sprintf("/workflows/%d/", app.RunID), 1)
	if status, body, _ := requestIDToken(t, appRunURL, "Bearer "+otherTask.reqToken, docAudience); status != http.StatusBadRequest || body != "run-id does not match\n" {
		t.Errorf("acme/other's request token on acme/app's run: %d %q, want 400 run-id does not match", status, body)
	}

	// Without &audience= the token is for <ROOT_URL><owner>, which the role does not accept.
	defRaw := mustIDToken(t, appTask, "")
	if c, _ := unverifiedClaims(t, defRaw); c["aud"] != e.url+"/acme" {
		t.Errorf("default aud %v, want %s/acme", c["aud"], e.url)
	}
	if _, err := b.login(t.Context(), defRaw); err == nil || !strings.Contains(err.Error(), "bound audience") {
		t.Errorf("login with the default audience: %v, want refused", err)
	}

	// Expiry: an hour, plus OpenBao's leeway, on the injected clock.
	clk.advance(forgejoLifetime + defaultLeeway - time.Second)
	if _, err := b.login(t.Context(), raw); err != nil {
		t.Errorf("login just inside the leeway: %v", err)
	}
	clk.advance(2 * time.Second)
	if _, err := b.login(t.Context(), raw); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("login after exp plus leeway: %v, want expired", err)
	}
	// A token fetched now is good for another hour: the task still runs.
	if _, err := b.login(t.Context(), mustIDToken(t, appTask, docAudience)); err != nil {
		t.Errorf("login with a fresh token: %v", err)
	}

	// The request token itself lasts 24 hours (services/actions/auth.go).
	clk.advance(24 * time.Hour)
	if status, body, _ := requestIDToken(t, appTask.requestURL, "Bearer "+appTask.reqToken, docAudience); status != http.StatusInternalServerError || body != "Error runner api parsing authorization token\n" {
		t.Errorf("expired request token: %d %q, want 500", status, body)
	}
}

// TestOIDCTaskEnded: once the task is over Forgejo gives no token, but one it gave stays valid
// until it expires: it cannot be revoked.
func TestOIDCTaskEnded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := newEnv(t, func(o *forgejosim.Options) { o.Now = clk.Now })
	j := e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/app", Workflow: "deploy.yml", EnableOpenIDConnect: true,
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}},
	}).Jobs[0]
	tk := e.take(j)
	b := newBao(t, e.url, clk.Now)
	raw := mustIDToken(t, tk, docAudience)

	_, err := tk.runner.finish(tk.task.GetId(), runnerv1.Result_RESULT_SUCCESS)
	mustNoErr(t, err, "finish the task")
	status, body, _ := requestIDToken(t, tk.requestURL, "Bearer "+tk.reqToken, docAudience)
	if status != http.StatusInternalServerError || body != "Error runner api getting task: task is not running\n" {
		t.Errorf("after the task ended: %d %q, want 500 task is not running", status, body)
	}
	clk.advance(time.Minute)
	if _, err := b.login(t.Context(), raw); err != nil {
		t.Errorf("a token issued during the task, after it ended: %v; Forgejo does not revoke it", err)
	}
}

// TestOIDCRequestChecks follows routers/api/actions/id_token.go's checks and
// tests/integration/api_actions_id_token_test.go's expectations.
func TestOIDCRequestChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jobs := e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/app", EnableOpenIDConnect: true,
		Jobs: []forgejosim.RunJobSpec{
			{Name: "with", RunsOn: []string{"docker"}},
			{Name: "without", RunsOn: []string{"docker"}, EnableOpenIDConnect: enabled(false)},
		},
	}).Jobs
	with, without := e.take(jobs[0]), e.take(jobs[1])
	plain := e.take(e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/app", Jobs: []forgejosim.RunJobSpec{{Name: "build", RunsOn: []string{"docker"}}},
	}).Jobs[0])

	// The job's own setting wins over the workflow's; off by default.
	for name, tk := range map[string]oidcTask{"job-level false": without, "not enabled": plain} {
		if tk.requestURL != "" || tk.reqToken != "" || tk.runtime == "" {
			t.Errorf("%s: request URL %q, token %q, runtime token set %v; want only the runtime token", name, tk.requestURL, tk.reqToken, tk.runtime != "")
		}
		if strings.Contains(string(tk.task.GetWorkflowPayload()), "enable-openid-connect") {
			t.Errorf("%s: payload carries enable-openid-connect", name)
		}
	}

	runURL := func(runID int64) string {
		return fmt.Sprintf("%s/api/actions/_apis/pipelines/workflows/%d/idtoken?placeholder=true", e.url, runID)
	}
	forged := must(jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"TaskID": with.task.GetId(), "RunID": jobs[0].RunID, "JobID": jobs[0].ID,
		"scp":        fmt.Sprintf("Actions.Results:%d:%d generate_id_token:%d:%d", jobs[0].RunID, jobs[0].ID, jobs[0].RunID, jobs[0].ID),
		"oidc_extra": `{"repository":"acme/app"}`, "oidc_sub": "repo:acme/app:ref:refs/heads/main",
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("not forgejo's secret")))
	for _, c := range []struct {
		name, url, auth string
		status          int
		body            string
	}{
		{"no authorization", with.requestURL, "", http.StatusUnauthorized, "Bad authorization header\n"},
		{"token scheme", with.requestURL, "token " + with.reqToken, http.StatusUnauthorized, "Bad authorization header\n"},
		{"not a JWT", with.requestURL, "Bearer 1234567", http.StatusInternalServerError, "Error runner api parsing authorization token\n"},
		{"signed by someone else", with.requestURL, "Bearer " + forged, http.StatusInternalServerError, "Error runner api parsing authorization token\n"},
		{"runtime token of a job without OIDC", runURL(jobs[1].RunID), "Bearer " + without.runtime, http.StatusInternalServerError, "Error runner api parsing custom claims\n"},
		{"run id not a number", strings.Replace(with.requestURL, fmt.Sprintf("/%d/", jobs[0].RunID), "/abcde/", 1), "Bearer " + with.reqToken, http.StatusBadRequest, "run-id does not match\n"},
		{"lower-case bearer", with.requestURL, "bearer " + with.reqToken, http.StatusOK, ""},
	} {
		status, body, _ := requestIDToken(t, c.url, c.auth, "")
		if status != c.status || (c.body != "" && body != c.body) {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, body, c.status, c.body)
		}
	}
}

// TestOIDCBeforeForgejo15: Forgejo 14 has no Actions ID tokens.
func TestOIDCBeforeForgejo15(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetVersion("14.0.5")
	e.expect(http.MethodGet, "/api/actions/.well-known/openid-configuration", "", nil, http.StatusNotFound, nil)
	e.expect(http.MethodGet, "/api/actions/.well-known/keys", "", nil, http.StatusNotFound, nil)
	j := e.queueRun(forgejosim.QueueRunRequest{
		Repo: "acme/app", EnableOpenIDConnect: true,
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}},
	}).Jobs[0]
	// The runner is registered through Forgejo 15's API (a 14 has none), then the server is a
	// Forgejo 14 again and the runner fetches with FetchTask, as runners did before 15.
	e.sim.SetVersion(forgejosim.DefaultVersion)
	reg := e.register(adminPrefix, adminToken, "old", false)
	e.sim.SetVersion("14.0.5")
	r := e.runner(reg, "docker")
	task, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if task == nil {
		t.Fatalf("job %d: no task", j.ID)
	}
	f := task.GetContext().GetFields()
	if f["forgejo_actions_id_token_request_url"] != nil || f["gitea_runtime_token"].GetStringValue() == "" {
		t.Errorf("Forgejo 14 task context: request URL %v, runtime token %q", f["forgejo_actions_id_token_request_url"], f["gitea_runtime_token"].GetStringValue())
	}
}
