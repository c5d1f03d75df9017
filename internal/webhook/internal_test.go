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
