package runnerpod

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name       string
		runner     string
		wantPod    string // empty: only check validity
		wantSecret string
	}{
		{name: "short name kept", runner: "linux-4711", wantPod: "linux-4711", wantSecret: "linux-4711-token"},
		{name: "63 characters kept", runner: strings.Repeat("a", 63), wantPod: strings.Repeat("a", 63), wantSecret: strings.Repeat("a", 63) + "-token"},
		{name: "64 characters", runner: strings.Repeat("a", 64), wantSecret: strings.Repeat("a", 64) + "-token"},
		{name: "dotted name", runner: "pool.example.4711"},
		{name: "253 characters", runner: strings.Repeat("r", 253)},
		{name: "248 characters, secret just fits", runner: strings.Repeat("r", 247), wantSecret: strings.Repeat("r", 247) + "-token"},
		{name: "cut lands on a dot", runner: strings.Repeat("a", 51) + "." + strings.Repeat("b", 200)},
		{name: "secret cut lands on a dot", runner: strings.Repeat("a", 235) + "." + strings.Repeat("b", 17)},
		{name: "cut lands on a dash", runner: strings.Repeat("a", 51) + "-" + strings.Repeat("b", 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runner(withRunnerName(tt.runner))
			pod, secret := PodName(r), SecretName(r)
			if errs := validation.IsDNS1123Label(pod); len(errs) > 0 {
				t.Errorf("pod name %q: %v", pod, errs)
			}
			if errs := validation.IsDNS1123Subdomain(secret); len(errs) > 0 {
				t.Errorf("secret name %q: %v", secret, errs)
			}
			if errs := validation.IsValidLabelValue(LabelValue(tt.runner)); len(errs) > 0 {
				t.Errorf("label value %q: %v", LabelValue(tt.runner), errs)
			}
			if tt.wantPod != "" && pod != tt.wantPod {
				t.Errorf("pod name = %q, want %q", pod, tt.wantPod)
			}
			if tt.wantSecret != "" && secret != tt.wantSecret {
				t.Errorf("secret name = %q, want %q", secret, tt.wantSecret)
			}
			if PodName(r) != pod || SecretName(r) != secret {
				t.Error("names are not deterministic")
			}
			if pod == secret {
				t.Error("pod and secret share a name")
			}
		})
	}
}

// Runner names are made from the pool name and the job, so long ones share long prefixes; their
// short forms must still differ.
func TestShortNamesStayDistinct(t *testing.T) {
	prefix := strings.Repeat("p", 240)
	seen := map[string]string{}
	for _, suffix := range []string{"-1", "-2", "-10", ".1", "-a"} {
		r := runner(withRunnerName(prefix + suffix))
		for _, n := range []string{PodName(r), SecretName(r), "label:" + LabelValue(r.Name)} {
			if other, dup := seen[n]; dup {
				t.Errorf("%q and %q both shorten to %q", other, r.Name, n)
			}
			seen[n] = r.Name
		}
	}
}
