package forgejo

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseResponse feeds arbitrary server output to every parser the client applies to Forgejo's
// answers. Parsers must never panic, must keep their documented bounds, and the error text built
// from a body must never show a secret. `go test` runs the seeds below.
func FuzzParseResponse(f *testing.F) {
	seeds := []string{
		``, `null`, `[]`, `{}`, `"x"`,
		`[{"id":1,"uuid":"8d2a","owner_id":0,"repo_id":3,"name":"r","status":"idle","version":"v12.8.2","labels":["docker"],"description":"pool=a","ephemeral":true}]`,
		`[{"id":1,"labels":[{"id":4,"name":"gpu","type":"custom"}]}]`,
		`[{"id":1,"labels":[1,2]}]`, `[{"id":"1"}]`,
		`[{"id":9,"run_id":2,"attempt":1,"handle":"h","repo_id":3,"owner_id":2,"name":"build","html_url":"u","needs":[],"runs_on":["docker"],"task_id":0,"status":"waiting"}]`,
		`{"id":1,"uuid":"u","token":"0123456789abcdef0123456789abcdef01234567"}`,
		`{"message":"token fuzz-api-token-1 rejected","url":"https://f/api/swagger"}`,
		`{"message":"` + strings.Repeat("\u00e9", 200) + `"}`,
		"<html>502</html>", "plain\x00text\r\n",
		`<https://f/api/v1/admin/actions/runners?limit=3&page=2>; rel="next",<https://f/x?page=4>; rel="last"`,
		`<a,b>; rel=next, <c?page=9>;rel="prev next"`, `<<>>;;rel==`,
		"120", "Mon, 20 Apr 2026 10:00:30 GMT", "-5", "18446744073709551616",
		"15.0.0+gitea-1.22.0", "v15.0.0-dev-1-abc", "11.0.0", "1.22.3", "15..0", "9999999999.0.0",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	const apiToken = "fuzz-api-token-1"
	now := time.Date(2026, 4, 20, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := string(data)

		if rs, err := ParseRunners(data); err == nil {
			for _, r := range rs {
				_ = r.Labels
			}
		}
		_, _ = ParseRunner(data)
		_, _ = ParseJobs(data)
		if _, err := ParseRegistration(data); err != nil && len(s) >= minSecretLen && strings.Contains(err.Error(), s) {
			t.Fatalf("registration error quotes the body: %v", err)
		}

		msg := redact(ParseErrorBody(data), apiToken)
		if strings.Contains(msg, apiToken) {
			t.Fatalf("message shows the API token: %q", msg)
		}
		if utf8.Valid(data) && !utf8.ValidString(msg) {
			t.Fatalf("message of valid UTF-8 became invalid: %q", msg)
		}
		if len(msg) > maxMessageLen+len("…")+len(redacted)*maxMessageLen {
			t.Fatalf("message not capped: %d bytes", len(msg))
		}
		if strings.ContainsAny(msg, "\n\r\x00") {
			t.Fatalf("message keeps control characters: %q", msg)
		}

		if page := ParseLinkNext(s); page < 0 {
			t.Fatalf("negative page %d", page)
		}

		if d, ok := ParseRetryAfter(s, now); ok && (d < 0 || d > maxRetryAfter) {
			t.Fatalf("Retry-After %q gave %v", s, d)
		} else if !ok && d != 0 {
			t.Fatalf("Retry-After %q rejected but gave %v", s, d)
		}

		v, err := CheckVersion(s)
		if err == nil && v.Major < MinimumMajor {
			t.Fatalf("version %q accepted with major %d", s, v.Major)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Fatalf("version error too long: %d bytes", len(err.Error()))
		}
	})
}
