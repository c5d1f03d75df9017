package forgejo

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseLinkNext(t *testing.T) {
	for header, want := range map[string]int{
		``: 0,
		`<https://f.example/api/v1/admin/actions/runners?limit=3&page=2>; rel="next",<https://f.example/api/v1/admin/actions/runners?limit=3&page=4>; rel="last"`: 2,
		`<https://f.example/x?page=4>; rel="last", <https://f.example/x?page=1>; rel="first"`:                                                                     0,
		`<https://f.example/x?a=1,2&page=3>;rel=next`:   3,
		`<https://f.example/x?page=5>; rel="prev next"`: 5,
		`<https://f.example/x?page=abc>; rel="next"`:    0,
		`<https://f.example/x?page=-1>; rel="next"`:     0,
		`https://f.example/x?page=2; rel="next"`:        0,
	} {
		if got := ParseLinkNext(header); got != want {
			t.Errorf("ParseLinkNext(%q) = %d, want %d", header, got, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 4, 20, 10, 0, 0, 0, time.UTC)
	for value, want := range map[string]time.Duration{
		"0":                             0,
		"120":                           2 * time.Minute,
		" 5 ":                           5 * time.Second,
		"99999999999999999999":          time.Hour,
		"Mon, 20 Apr 2026 10:00:30 GMT": 30 * time.Second,
		"Mon, 20 Apr 2026 09:00:00 GMT": 0,
		"Mon, 20 Apr 2027 10:00:00 GMT": time.Hour,
	} {
		got, ok := ParseRetryAfter(value, now)
		if !ok || got != want {
			t.Errorf("ParseRetryAfter(%q) = %v %v, want %v", value, got, ok, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5", "soon"} {
		if _, ok := ParseRetryAfter(bad, now); ok {
			t.Errorf("ParseRetryAfter(%q) accepted", bad)
		}
	}
}

func TestCheckVersion(t *testing.T) {
	for s, wantOK := range map[string]bool{
		"15.0.0+sim":                          true,
		"15.0.1+gitea-1.22.0":                 true,
		"v15.1.0":                             true,
		"15.0.0-dev-412-ab12cd3+gitea-1.22.0": true,
		"16":                                  true,
		"11.0.0":                              false,
		"14.0.3+gitea-1.22.0":                 false,
		"1.22.3":                              false,
		"":                                    false,
		"development":                         false,
		"15.0.0 ; rm -rf":                     false,
	} {
		_, err := CheckVersion(s)
		if (err == nil) != wantOK {
			t.Errorf("CheckVersion(%q) = %v", s, err)
		}
		if err != nil && !errors.Is(err, ErrForgejoTooOld) {
			t.Errorf("CheckVersion(%q): %v is not ErrForgejoTooOld", s, err)
		}
	}
	v, err := ParseVersion("15.2.3-rc1+gitea-1.22.0")
	if err != nil || v.Major != 15 || v.Minor != 2 || v.Patch != 3 || v.Pre != "rc1" || v.Meta != "gitea-1.22.0" {
		t.Fatalf("ParseVersion: %+v %v", v, err)
	}
}

func TestParseBodies(t *testing.T) {
	rs, err := ParseRunners([]byte(`[{"id":1,"uuid":"u","labels":["docker",{"name":"gpu","type":"custom"}],"status":"idle"}]`))
	if err != nil || len(rs) != 1 || strings.Join(rs[0].Labels, ",") != "docker,gpu" {
		t.Fatalf("runners %+v %v", rs, err)
	}
	if rs, err := ParseRunners([]byte(`null`)); err != nil || len(rs) != 0 {
		t.Fatalf("null runners %+v %v", rs, err)
	}
	if js, err := ParseJobs([]byte("null\n")); err != nil || len(js) != 0 {
		t.Fatalf("null jobs %+v %v", js, err)
	}
	if _, err := ParseJobs([]byte(`{"message":"x"}`)); err == nil {
		t.Fatalf("an object was taken for a job list")
	}
	secret := "0123456789abcdef0123456789abcdef01234567"
	_, err = ParseRegistration([]byte(`{"id":1,"uuid":"u","token":"` + secret + `"`))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("truncated registration: %v", err)
	}
}

func TestParseErrorBodyAndRedaction(t *testing.T) {
	apiToken := "my-api-token-value"
	runnerToken := "0123456789abcdef0123456789abcdef01234567"
	for body, want := range map[string]string{
		`{"message":"The target couldn't be found.","url":"https://f/api/swagger"}`: "The target couldn't be found.",
		`{"message":"token my-api-token-value is invalid"}`:                         "token [REDACTED] is invalid",
		`{"message":"runner token 0123456789abcdef0123456789abcdef01234567 seen"}`:  "runner token [REDACTED] seen",
		`{"error":"rate limit"}`:                    "rate limit",
		"upstream\nconnect error":                   "upstream connect error",
		"<html><body>502 Bad Gateway</body></html>": "",
	} {
		if got := redact(ParseErrorBody([]byte(body)), apiToken); got != want {
			t.Errorf("%q: got %q, want %q", body, got, want)
		}
	}
	long := ParseErrorBody([]byte(`{"message":"` + strings.Repeat("é", 400) + `"}`))
	if !utf8.ValidString(long) || len(long) > maxMessageLen+len("…") {
		t.Fatalf("long message not capped cleanly: %d bytes", len(long))
	}
	e := &APIError{Endpoint: EndpointGetRunner, Scope: GlobalScope(), StatusCode: 404, Message: redact("x "+runnerToken, apiToken)}
	if strings.Contains(e.Error(), runnerToken) || !strings.Contains(e.Error(), "not visible to this token") {
		t.Fatalf("APIError: %v", e)
	}
}
