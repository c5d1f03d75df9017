package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

// FuzzHandler drives signature verification and parsing with arbitrary bodies and headers.
// mode chooses the signature: 0 signs the body correctly (so parsing is reached), 1 sends sig as
// given, 2 sends it as X-Hub-Signature-256, 3 sends none.
func FuzzHandler(f *testing.F) {
	valid := jobPayload(f, webhook.ActionNewJobAttempt, "waiting")
	seeds := []struct {
		body   string
		mode   uint8
		sig    string
		event  string
		header string
	}{
		{string(valid), 0, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{string(valid), 0, "", "workflow_job", "X-Gitea-Event"},
		{string(valid), 0, "", "push", "X-Forgejo-Event-Type"},
		{string(valid), 1, sign(secret, valid), "workflow_job_running", "X-Forgejo-Event"},
		{string(valid), 2, "sha256=" + sign(secret, valid), "workflow_job_success", "X-Forgejo-Event"},
		{string(valid), 1, "00", "workflow_job_waiting", "X-Forgejo-Event"},
		{string(valid), 3, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{`{"job":null}`, 0, "", "workflow_job", "X-Forgejo-Event"},
		{`{"job":{"runs_on":"docker"}}`, 0, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{`{"job":{"id":1e400}}`, 0, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{`{"repository":{"full_name":"a/b","owner":null},"job":{"status":"blocked"}}`, 0, "", "workflow_job", "X-Forgejo-Event"},
		{`{"repository":[],"job":{}}`, 0, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{"\xff\xfe", 0, "", "workflow_job_waiting", "X-Forgejo-Event"},
		{"", 1, "", "", ""},
		{`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`, 0, "", "workflow_job", "X-Forgejo-Event"},
		{forgejo15Deliveries["push"], 0, "", "push", "X-Forgejo-Event-Type"},
		{forgejo15Deliveries["action_run_success"], 0, "", "action_run_success", "X-Forgejo-Event-Type"},
		{`{"run":{"repository":{"full_name":"a/b","id":-1,"owner":{"id":-2}}}}`, 0, "", "action_run_failure", "X-Forgejo-Event"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.mode, s.sig, s.event, s.header, "delivery-1")
	}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, sig, event, eventHeader, id string) {
		e := newEnv(t, func(o *webhook.Options) {
			o.MaxBodyBytes = 64 << 10
			o.DedupeSize = 4
		})
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		set := func(k, v string) {
			// Header values the HTTP stack would never deliver are out of scope.
			if !strings.ContainsAny(v, "\r\n\x00") {
				req.Header.Set(k, v)
			}
		}
		switch mode % 4 {
		case 0:
			sig = sign(secret, body)
			set("X-Forgejo-Signature", sig)
		case 1:
			set("X-Forgejo-Signature", sig)
		case 2:
			set("X-Hub-Signature-256", sig)
		}
		switch eventHeader {
		case "X-Forgejo-Event", "X-Forgejo-Event-Type", "X-Gitea-Event", "X-Gitea-Event-Type":
			set(eventHeader, event)
		}
		set("X-Forgejo-Delivery", id)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusAccepted, http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("unexpected status %d", rec.Code)
		}
		got, repos := e.snk.got(), e.snk.gotRepos()
		if len(got)+len(repos) == 0 {
			if rec.Code == http.StatusAccepted {
				t.Fatal("202 without an event")
			}
			return
		}
		// Whatever reached the sink was signed with the secret.
		given, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(req.Header.Get("X-Forgejo-Signature")+req.Header.Get("X-Hub-Signature-256")), "sha256="))
		want, _ := hex.DecodeString(sign(secret, body))
		if err != nil || !hmac.Equal(given, want) {
			t.Fatalf("unsigned delivery reached the sink: %+v %+v", got, repos)
		}
		if rec.Code != http.StatusAccepted || len(got)+len(repos) != 1 {
			t.Fatalf("status %d, events %+v %+v", rec.Code, got, repos)
		}
		if len(got) == 1 && !strings.HasPrefix(got[0].Event, "workflow_job_") {
			t.Fatalf("job event %+v", got[0])
		}
		if len(repos) == 1 && (strings.Count(repos[0].Repository, "/") != 1 || repos[0].RepoID < 0 || repos[0].OwnerID < 0) {
			t.Fatalf("repository event %+v", repos[0])
		}
	})
}
