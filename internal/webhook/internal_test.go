package webhook

import (
	"strings"
	"testing"
)

func TestSanitizeID(t *testing.T) {
	cases := map[string]string{
		"":                                     "",
		"0b6f4c1e-2d5a-4c3b-9f1e-7a8b9c0d1e2f": "0b6f4c1e-2d5a-4c3b-9f1e-7a8b9c0d1e2f",
		"a b\tc\x00d\x7fé":                     "a?b?c?d???",
		strings.Repeat("x", 100):               strings.Repeat("x", maxDeliveryIDLogLen) + "…",
	}
	for in, want := range cases {
		if got := SafeID(in); got != want {
			t.Errorf("SafeID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDedupeKeyBoundsLongIDs(t *testing.T) {
	long := strings.Repeat("y", 10000)
	if k := dedupeKey(long); len(k) > 80 || k == dedupeKey(long+"z") {
		t.Errorf("key %q of a long id is not a bounded digest", k)
	}
	if dedupeKey("short") != "short" {
		t.Error("short ids should be kept as they are")
	}
}

// Verified payloads come from Forgejo, but what they name goes into Runners, records and logs:
// a name no Forgejo repository could have, or a handle too long for a Runner, is not passed on.
func TestParseDropsNamesNoRunnerCouldCarry(t *testing.T) {
	body := func(repo, handle string) []byte {
		return []byte(`{"action":"new_job_attempt","job":{"id":1,"handle":"` + handle + `","status":"waiting","repo_id":3},"repository":{"full_name":"` + repo + `","owner":{"login":"acme"}}}`)
	}
	cases := []struct {
		repo, handle         string
		wantRepo, wantHandle string
	}{
		{"acme/app", "h-1", "acme/app", "h-1"},
		{"acme/app/extra", "h-1", "", "h-1"},
		{"acme/a\\u0007pp", "h-1", "", "h-1"},
		{"acme/" + strings.Repeat("x", 300), "h-1", "", "h-1"},
		{"acme/app", strings.Repeat("h", 256), "acme/app", ""},
		{"acme/app", "h\\n1", "acme/app", ""},
	}
	for _, c := range cases {
		ev, err := parse(body(c.repo, c.handle), "workflow_job_waiting")
		if err != nil {
			t.Fatalf("%q: %v", c.repo, err)
		}
		if ev.Repository != c.wantRepo || ev.Job.Handle != c.wantHandle {
			t.Errorf("repository %.20q, handle %.20q: got %.20q, %.20q; want %.20q, %.20q", c.repo, c.handle, ev.Repository, ev.Job.Handle, c.wantRepo, c.wantHandle)
		}
	}
}
