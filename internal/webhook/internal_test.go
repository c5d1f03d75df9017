package webhook

import (
	"fmt"
	"strings"
	"testing"
	"time"
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

// A flood of distinct verified bodies keeps the memory at its bound, evicts the flooder's own
// deliveries first, and leaves another signer's within their window.
func TestDedupeFloodStaysBounded(t *testing.T) {
	const size = 1000
	d := newDedupe(size, time.Hour)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if !d.add("victim", []byte("victim-mac"), "victim-id", now) {
		t.Fatal("first delivery not new")
	}
	for i := range 100 * size {
		if !d.add("flooder", fmt.Appendf(nil, "mac-%d", i), fmt.Sprint(i), now) {
			t.Fatalf("distinct body %d not new", i)
		}
	}
	deliveries, keys, signers := d.stats()
	if deliveries != size || keys != 2*size || signers != 2 {
		t.Errorf("after the flood: %d deliveries, %d keys, %d signers; want %d, %d, 2", deliveries, keys, signers, size, 2*size)
	}
	if d.add("victim", []byte("victim-mac"), "another-id", now) {
		t.Error("the victim's body was forgotten in another signer's flood")
	}
	if !d.add("flooder", []byte("mac-0"), "", now) {
		t.Error("the flooder's oldest body was not the one forgotten")
	}
	if d.add("flooder", fmt.Appendf(nil, "mac-%d", 100*size-1), "", now) {
		t.Error("the flooder's newest body was forgotten")
	}
	// The window ends and a sweep reclaims everything that aged out.
	later := now.Add(time.Hour)
	if !d.add("victim", []byte("victim-mac"), "", later) {
		t.Error("the victim's body is still remembered after the window")
	}
	if !d.add("flooder", []byte("fresh"), "", later) {
		t.Error("fresh body not new")
	}
	for i := range size {
		d.add("flooder", fmt.Appendf(nil, "late-%d", i), "", later)
	}
	if deliveries, _, _ := d.stats(); deliveries > size {
		t.Errorf("%d deliveries remembered, over the bound %d", deliveries, size)
	}
}

func TestSourceKey(t *testing.T) {
	cases := map[string]string{
		"192.0.2.1:1234":            "192.0.2.1",
		"[::ffff:192.0.2.1]:1234":   "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:80":      "2001:db8:1:2::/64",
		"@":                         "@",
		"192.0.2.1":                 "192.0.2.1",
	}
	for in, want := range cases {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// Memory stays bounded however many sources send: beyond the bound they share one allowance.
func TestLimiterSourcesAreBounded(t *testing.T) {
	l := newLimiter(1, 2, 10)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 1000 {
		l.take(fmt.Sprintf("192.0.2.%d", i), now)
	}
	if n := l.sources(); n > 11 {
		t.Errorf("%d sources remembered, want at most 10 and the shared one", n)
	}
	if _, ok := l.take("203.0.113.1", now); ok {
		t.Error("a source beyond the bound did not share the spent shared allowance")
	}
	// Once the remembered ones have refilled they are forgotten, and a new source is itself.
	later := now.Add(time.Minute)
	if key, ok := l.take("203.0.113.2", later); !ok || key != "203.0.113.2" {
		t.Errorf("after refilling: key %q ok %v, want its own allowance", key, ok)
	}
}
