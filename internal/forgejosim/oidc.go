package forgejosim

// Forgejo 15's OpenID Connect ID tokens for Actions jobs, as read in Forgejo v15.0.3's source:
//
//   - routers/api/actions/oidc.go: the issuer's discovery document and JWKS, mounted under
//     /api/actions/.well-known/ (routers/api/actions/actions.go, routers/init.go);
//   - routers/api/actions/id_token.go: GET /api/actions/_apis/pipelines/workflows/{run_id}/idtoken,
//     authorised by the task's runtime token, answering {"value": "<RS256 JWT>"};
//   - services/actions/auth.go: the runtime token (an HS256 JWT signed with the instance's general
//     token signing secret) that carries the task, run and job ids, the scope
//     "generate_id_token:<run>:<job>" and, frozen when the task is created, the ID token's sub and
//     custom claims;
//   - services/actions/task.go generateTaskContext: the context fields forgejo-runner turns into
//     ACTIONS_ID_TOKEN_REQUEST_TOKEN and ACTIONS_ID_TOKEN_REQUEST_URL
//     (forgejo-runner internal/app/run/runner.go), set only when the job opts in with
//     `enable-openid-connect: true` (act/jobparser/jobparser.go: the job's setting wins over the
//     workflow's; off by default) and never for a fork's pull_request run;
//   - modules/setting/actions.go: [actions] ID_TOKEN_SIGNING_ALGORITHM (RS256),
//     ID_TOKEN_SIGNING_PRIVATE_KEY_FILE and ID_TOKEN_EXPIRATION_TIME (3600 s);
//     modules/jwtx/signingkey.go: a 2048-bit RSA key for RS256, kid = base64url(SHA-256 of the
//     PKIX public key).
//
// None of these paths is under /api/v1, so the swagger contract checker (swagger_test.go), which
// holds only /api/v1 answers to Forgejo's API description, lets them through: Forgejo's swagger
// does not describe them either.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Endpoint names of the OIDC routes, used to aim injected faults.
const (
	EndpointOIDCConfiguration = "oidc-configuration"
	EndpointOIDCKeys          = "oidc-keys"
	EndpointIDToken           = "id-token"
)

// Forgejo's defaults for ID tokens and runtime tokens.
const (
	// idTokenLifetime is [actions] ID_TOKEN_EXPIRATION_TIME's default (modules/setting/actions.go).
	idTokenLifetime = 3600 * time.Second
	// runtimeTokenLifetime is the runtime token's validity (services/actions/auth.go
	// CreateAuthorizationToken); it outlives most tasks, which is why the ID token route also
	// checks that the task is still running.
	runtimeTokenLifetime = 24 * time.Hour
	// idTokenAlgorithm is [actions] ID_TOKEN_SIGNING_ALGORITHM's default, the only one simulated.
	idTokenAlgorithm = "RS256"
	// idTokenKeyBits is what modules/jwtx/signingkey.go createAsymmetricKey makes for RS256.
	idTokenKeyBits = 2048
	// workflowDirectory is where the simulated runs' workflow files live; Forgejo also reads
	// .gitea/workflows and .github/workflows, and puts the one it used into workflow_ref.
	workflowDirectory = ".forgejo/workflows"
	// idTokenRoute is routers/api/actions/id_token.go idTokenRouteBase under /api/actions.
	idTokenRoute = actionsPrefix + "/_apis/pipelines/workflows/{run_id}/idtoken"
)

// Context fields of a task (services/actions/task.go generateTaskContext).
const (
	ctxRuntimeToken        = "gitea_runtime_token"
	ctxIDTokenRequestToken = "forgejo_actions_id_token_request_token"
	ctxIDTokenRequestURL   = "forgejo_actions_id_token_request_url"
)

// supportsActionsOIDCLocked reports whether the simulated version has Actions ID tokens: Forgejo
// 15 added them (v14.0.0 has no routers/api/actions/id_token.go).
func (s *Server) supportsActionsOIDCLocked() bool { return majorVersion(s.version) >= 15 }

// oidcState holds the two secrets of Forgejo's Actions tokens, made on first use: the RSA key
// takes a moment to generate and most simulators never sign an ID token.
type oidcState struct {
	secretOnce sync.Once
	secret     []byte // the general token signing secret (HS256 runtime tokens)

	keyOnce sync.Once
	key     *rsa.PrivateKey // the ID token signing key
	kid     string
	keyErr  error
}

// oidcSecret returns the HMAC secret runtime tokens are signed with: derived from Options.Seed
// when set, so a seeded simulator hands out the same tokens each time, else random.
func (s *Server) oidcSecret() []byte {
	o := &s.oidc
	o.secretOnce.Do(func() {
		if s.opts.Seed == 0 {
			o.secret = make([]byte, 32)
			if _, err := rand.Read(o.secret); err != nil {
				panic(fmt.Sprintf("crypto/rand: %v", err))
			}
			return
		}
		o.secret = seedDigest("forgejosim general token signing secret", s.opts.Seed)
	})
	return o.secret
}

// oidcKey returns the ID token signing key and its kid. With Options.Seed it is derived from the
// seed (the same key for the same seed, as a Forgejo keeps its private.pem); without, it is
// random, as the key Forgejo makes on first start.
func (s *Server) oidcKey() (*rsa.PrivateKey, string, error) {
	o := &s.oidc
	o.keyOnce.Do(func() {
		if s.opts.Seed == 0 {
			o.key, o.keyErr = rsa.GenerateKey(rand.Reader, idTokenKeyBits)
		} else {
			seed := [32]byte(seedDigest("forgejosim actions id token key", s.opts.Seed))
			o.key, o.keyErr = deterministicRSAKey(mathrand.NewChaCha8(seed), idTokenKeyBits)
		}
		if o.keyErr != nil {
			o.keyErr = fmt.Errorf("make the ID token signing key: %w", o.keyErr)
			return
		}
		o.kid, o.keyErr = keyID(&o.key.PublicKey)
	})
	return o.key, o.kid, o.keyErr
}

func seedDigest(label string, seed uint64) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	mac := hmac.New(sha256.New, []byte(label))
	mac.Write(b[:])
	return mac.Sum(nil)
}

// keyID is modules/jwtx/signingkey.go newRSASigningKey's kid: base64url, unpadded, of the SHA-256
// of the PKIX-encoded public key (modules/util/keypair.go CreatePublicKeyFingerprint).
func keyID(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// deterministicRSAKey makes an RSA key from the bytes of r. crypto/rsa.GenerateKey cannot be
// used for this: Go 1.26 ignores its random source. The primes are drawn as uniform odd numbers
// with their top two bits set (so that the modulus has exactly bits bits) until one is prime.
func deterministicRSAKey(r io.Reader, bits int) (*rsa.PrivateKey, error) {
	const e = 65537
	one := big.NewInt(1)
	for {
		p, err := drawPrime(r, bits/2)
		if err != nil {
			return nil, err
		}
		q, err := drawPrime(r, bits-bits/2)
		if err != nil {
			return nil, err
		}
		if p.Cmp(q) == 0 {
			continue
		}
		n := new(big.Int).Mul(p, q)
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(big.NewInt(e), phi)
		if n.BitLen() != bits || d == nil {
			continue // e shares a factor with p-1 or q-1: draw again
		}
		key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
		key.Precompute()
		if err := key.Validate(); err != nil {
			return nil, fmt.Errorf("validate derived key: %w", err)
		}
		return key, nil
	}
}

func drawPrime(r io.Reader, bits int) (*big.Int, error) {
	buf := make([]byte, (bits+7)/8)
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("draw prime: %w", err)
		}
		if extra := len(buf)*8 - bits; extra > 0 {
			buf[0] &= 0xff >> extra
		}
		p := new(big.Int).SetBytes(buf)
		p.SetBit(p, bits-1, 1)
		p.SetBit(p, bits-2, 1)
		p.SetBit(p, 0, 1)
		if p.ProbablyPrime(20) {
			return p, nil
		}
	}
}

// runtimeTokenClaims is services/actions/auth.go AuthorizationTokenClaims; TaskID, RunID and
// JobID have no json tag there, so they are spelled as the Go fields.
type runtimeTokenClaims struct {
	jwt.RegisteredClaims
	Scp       string `json:"scp"`
	TaskID    int64
	RunID     int64
	JobID     int64
	Ac        string `json:"ac"`
	OIDCExtra string `json:"oidc_extra,omitempty"`
	OIDCSub   string `json:"oidc_sub,omitempty"`
}

// idTokenCustomClaims is services/actions/auth.go IDTokenCustomClaims: every value a string, as
// the task context gives it (fmt.Sprint of the context value, so ref_protected is "false").
type idTokenCustomClaims struct {
	Actor           string `json:"actor"`
	BaseRef         string `json:"base_ref"`
	EventName       string `json:"event_name"`
	HeadRef         string `json:"head_ref"`
	Ref             string `json:"ref"`
	RefProtected    string `json:"ref_protected"`
	RefType         string `json:"ref_type"`
	Repository      string `json:"repository"`
	RepositoryOwner string `json:"repository_owner"`
	RunAttempt      string `json:"run_attempt"`
	RunID           string `json:"run_id"`
	RunNumber       string `json:"run_number"`
	Sha             string `json:"sha"`
	Workflow        string `json:"workflow"`
	WorkflowRef     string `json:"workflow_ref"`
}

// addActionsTokensLocked completes a task's context as services/actions/task.go
// generateTaskContext does: the git context fields the ID token claims are taken from, the
// runtime token every task gets, and, when the job enabled OpenID Connect, the ID token request
// token (the same runtime token, with the generate_id_token scope) and URL.
func (s *Server) addActionsTokensLocked(fields map[string]any, t *task, j *job) {
	r := j.run
	// services/actions/context.go GenerateGiteaContext: a push run has no base or head ref, and
	// ref_protected is always false in v15.0.3.
	defaults := map[string]any{
		"base_ref":      "",
		"head_ref":      "",
		"ref_protected": false,
		"ref_type":      refType(r.ref),
		"workflow_ref":  fmt.Sprintf("%s/%s/%s@%s", r.repo.fullName(), workflowDirectory, r.workflowID, r.ref),
	}
	for k, v := range defaults {
		if _, ok := fields[k]; !ok {
			fields[k] = v
		}
	}
	oidc := j.openIDConnect && s.supportsActionsOIDCLocked()
	now := s.now()
	runJob := fmt.Sprintf("%d:%d", j.runID(), j.id)
	claims := runtimeTokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			ExpiresAt: jwt.NewNumericDate(now.Add(runtimeTokenLifetime)),
			NotBefore: jwt.NewNumericDate(now),
		},
		Scp:    "Actions.Results:" + runJob,
		TaskID: t.id,
		RunID:  j.runID(),
		JobID:  j.id,
		// One write scope for the whole cache, as CreateAuthorizationToken grants.
		Ac: `[{"Scope":"","Permission":2}]`,
	}
	if oidc {
		claims.OIDCExtra = string(mustMarshal(customClaimsOf(fields), false))
		claims.OIDCSub = oidcSubject(fields)
		claims.Scp += " generate_id_token:" + runJob
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.oidcSecret())
	if err != nil {
		// HMAC signing fails only for a key of the wrong type, and this one is []byte.
		panic(fmt.Sprintf("sign runtime token: %v", err))
	}
	fields[ctxRuntimeToken] = token
	if oidc {
		fields[ctxIDTokenRequestToken] = token
		// Forgejo builds it as setting.AppURL + setting.AppSubURL + "api/actions/...": right
		// for an instance at the root of its host; the simulator is always there.
		fields[ctxIDTokenRequestURL] = fmt.Sprintf("%s%s/_apis/pipelines/workflows/%d/idtoken?placeholder=true", s.baseURLLocked(), actionsPrefix, j.runID())
	}
}

// openIDConnectFor is act/jobparser/jobparser.go evaluateEnableOpenIDConnect: the job's
// enable-openid-connect wins over the workflow's; unset means off.
func openIDConnectFor(workflowLevel bool, jobLevel *bool) bool {
	if jobLevel != nil {
		return *jobLevel
	}
	return workflowLevel
}

// workflowWithOpenIDConnect appends what the single-job workflow Forgejo hands a runner carries
// when the job has OpenID Connect enabled (act/jobparser/model.go SingleWorkflow, omitempty).
func workflowWithOpenIDConnect(workflow string, enabled bool) string {
	if !enabled {
		return workflow
	}
	return workflow + "enable-openid-connect: true\n"
}

func refType(ref string) string {
	switch {
	case strings.HasPrefix(ref, "refs/heads/"):
		return "branch"
	case strings.HasPrefix(ref, "refs/tags/"):
		return "tag"
	default:
		return ""
	}
}

// customClaimsOf is services/actions/auth.go generateOIDCExtra.
func customClaimsOf(fields map[string]any) idTokenCustomClaims {
	v := func(k string) string {
		x, ok := fields[k]
		if !ok {
			return ""
		}
		return fmt.Sprint(x)
	}
	return idTokenCustomClaims{
		Actor: v("actor"), BaseRef: v("base_ref"), EventName: v("event_name"), HeadRef: v("head_ref"),
		Ref: v("ref"), RefProtected: v("ref_protected"), RefType: v("ref_type"),
		Repository: v("repository"), RepositoryOwner: v("repository_owner"),
		RunAttempt: v("run_attempt"), RunID: v("run_id"), RunNumber: v("run_number"),
		Sha: v("sha"), Workflow: v("workflow"), WorkflowRef: v("workflow_ref"),
	}
}

// oidcSubject is services/actions/auth.go generateOIDCSub: a pull_request run is named by the
// repository alone, every other event by repository and ref.
func oidcSubject(fields map[string]any) string {
	if fields["event_name"] == "pull_request" {
		return fmt.Sprintf("repo:%s:pull_request", fields["repository"])
	}
	return fmt.Sprintf("repo:%s:ref:%s", fields["repository"], fields["ref"])
}

// routeOIDC mounts the issuer's endpoints where routers/api/actions/actions.go Routes does.
func (s *Server) routeOIDC() {
	s.mux.Handle("GET "+actionsPrefix+"/.well-known/openid-configuration", s.withFaults(EndpointOIDCConfiguration, http.HandlerFunc(s.serveOpenIDConfiguration)))
	s.mux.Handle("GET "+actionsPrefix+"/.well-known/keys", s.withFaults(EndpointOIDCKeys, http.HandlerFunc(s.serveOIDCKeys)))
	s.mux.Handle("GET "+idTokenRoute, s.withFaults(EndpointIDToken, http.HandlerFunc(s.serveIDToken)))
}

// openIDConfiguration is routers/api/actions/oidc.go openIDConfiguration, fields in its order.
type openIDConfiguration struct {
	Issuer                           string   `json:"issuer"`
	JwksURI                          string   `json:"jwks_uri"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ScopesSupported                  []string `json:"scopes_supported"`
}

// claimsSupported is routers/api/actions/oidc.go OIDCRoutes': the registered claims, then the
// custom claims' json names in field order.
func claimsSupported() []string {
	out := []string{"sub", "aud", "exp", "iat", "iss", "nbf"}
	rt := reflect.TypeFor[idTokenCustomClaims]()
	for i := range rt.NumField() {
		if name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// issuer is the iss of every ID token and the discovery document's issuer: the instance URL
// followed by api/actions (routers/api/actions/oidc.go, id_token.go generateIDToken).
func (s *Server) issuer(r *http.Request) string { return s.publicURL(r) + actionsPrefix }

// oidcAvailable answers 404 for the OIDC routes of a simulated Forgejo older than 15, which has
// no such routes.
func (s *Server) oidcAvailable(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	ok := s.supportsActionsOIDCLocked()
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
	}
	return ok
}

func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter, r *http.Request) {
	if !s.oidcAvailable(w, r) {
		return
	}
	iss := s.issuer(r)
	writeForgejoJSON(w, http.StatusOK, openIDConfiguration{
		Issuer:                           iss,
		JwksURI:                          iss + "/.well-known/keys",
		SubjectTypesSupported:            []string{"public"},
		ResponseTypesSupported:           []string{"id_token"},
		ClaimsSupported:                  claimsSupported(),
		IDTokenSigningAlgValuesSupported: []string{idTokenAlgorithm},
		ScopesSupported:                  []string{"openid"},
	})
}

// serveOIDCKeys is the JWKS: the one signing key, as modules/jwtx/signingkey.go ToJWK writes it
// with "use": "sig" added (routers/api/actions/oidc.go InitOIDC).
func (s *Server) serveOIDCKeys(w http.ResponseWriter, r *http.Request) {
	if !s.oidcAvailable(w, r) {
		return
	}
	key, kid, err := s.oidcKey()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeForgejoJSON(w, http.StatusOK, map[string][]map[string]string{"keys": {{
		"kty": "RSA",
		"alg": idTokenAlgorithm,
		"kid": kid,
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		"n":   base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"use": "sig",
	}}})
}

// serveIDToken is routers/api/actions/id_token.go IDTokenContexter and generateIDToken, checks
// in their order and with their status codes and plain-text messages (http.Error, as
// services/context/base.go Error writes them).
func (s *Server) serveIDToken(w http.ResponseWriter, r *http.Request) {
	if !s.oidcAvailable(w, r) {
		return
	}
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(strings.ToLower(auth), "bearer ") {
		http.Error(w, "Bad authorization header", http.StatusUnauthorized)
		return
	}
	// The key is made before taking the lock: generating it the first time takes a moment.
	key, kid, keyErr := s.oidcKey()

	s.mu.Lock()
	defer s.mu.Unlock()
	_, raw, _ := strings.Cut(auth, " ")
	claims, err := s.parseRuntimeTokenLocked(raw)
	if err != nil {
		s.logf("forgejosim: id token: parse runtime token: %v", err)
		http.Error(w, "Error runner api parsing authorization token", http.StatusInternalServerError)
		return
	}
	var custom map[string]any
	if err := json.Unmarshal([]byte(claims.OIDCExtra), &custom); err != nil {
		// A runtime token of a job without enable-openid-connect has no oidc_extra.
		http.Error(w, "Error runner api parsing custom claims", http.StatusInternalServerError)
		return
	}
	t, ok := s.tasks[claims.TaskID]
	if !ok {
		http.Error(w, "Error runner api getting task by ID", http.StatusInternalServerError)
		return
	}
	if t.status != JobRunning {
		http.Error(w, "Error runner api getting task: task is not running", http.StatusInternalServerError)
		return
	}
	j := s.jobs[t.jobID]
	// ctx.ParamsInt64: what does not parse is 0, which matches no run.
	runID, _ := strconv.ParseInt(r.PathValue("run_id"), 10, 64)
	if j.runID() != runID {
		http.Error(w, "run-id does not match", http.StatusBadRequest)
		return
	}
	if !slices.Contains(strings.Split(claims.Scp, " "), fmt.Sprintf("generate_id_token:%d:%d", j.runID(), j.id)) {
		http.Error(w, "missing scp generate_id_token", http.StatusForbidden)
		return
	}
	audience := r.URL.Query().Get("audience")
	if audience == "" {
		// Forgejo: setting.AppURL (which ends in "/") + the repository owner's name.
		audience = fmt.Sprintf("%s/%v", s.publicURL(r), custom["repository_owner"])
	}
	if keyErr != nil {
		http.Error(w, "Error signing token", http.StatusInternalServerError)
		return
	}
	// Forgejo's expiry is timeutil.TimeStampNow() plus whole seconds; iat and nbf are now.
	now := s.now()
	idClaims := jwt.MapClaims{}
	for k, v := range custom {
		idClaims[k] = v
	}
	idClaims["sub"] = claims.OIDCSub
	idClaims["aud"] = audience
	idClaims["exp"] = jwt.NewNumericDate(time.Unix(now.Unix(), 0).Add(idTokenLifetime))
	idClaims["iat"] = jwt.NewNumericDate(now)
	idClaims["nbf"] = jwt.NewNumericDate(now)
	idClaims["iss"] = s.issuer(r)
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, idClaims)
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		http.Error(w, "Error signing token", http.StatusInternalServerError)
		return
	}
	writeForgejoJSON(w, http.StatusOK, map[string]string{"value": signed})
}

// parseRuntimeTokenLocked is services/actions/auth.go decodeTokenClaims: an HMAC-signed JWT,
// valid by its exp and nbf on the simulator's clock.
func (s *Server) parseRuntimeTokenLocked(raw string) (*runtimeTokenClaims, error) {
	claims := &runtimeTokenClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected signing method: %v", t.Header["alg"])
		}
		return s.oidcSecret(), nil
	}, jwt.WithTimeFunc(s.now))
	if err != nil {
		return nil, fmt.Errorf("parse runtime token: %w", err)
	}
	if !tok.Valid {
		return nil, errors.New("invalid token claim")
	}
	return claims, nil
}

// writeForgejoJSON is services/context/base.go JSON: Forgejo's content type, one JSON value and
// a newline.
func writeForgejoJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to tell it
}
