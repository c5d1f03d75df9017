package runnerpod

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// evaluate runs the API server's own Pod Security checks (the latest version of level) on pod.
func evaluate(t *testing.T, level psaapi.Level, pod *corev1.Pod) policy.AggregateCheckResult {
	t.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}
	return policy.AggregateCheckResults(evaluator.EvaluatePod(lv, &pod.ObjectMeta, &pod.Spec))
}

// withoutSidecar is pod with its DinD sidecar removed: what is left must meet "restricted".
func withoutSidecar(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	out.Spec.InitContainers = slices.DeleteFunc(out.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == DinDContainerName
	})
	return out
}

// The runner container meets Pod Security "restricted" in every mode; only the DinD sidecar
// may not, and then by the settings its mode names and nothing else.
func TestPodSecurity(t *testing.T) {
	tests := []struct {
		name string
		pool *v1alpha1.RunnerPool
		// restricted and baseline: whether the whole pod meets the level.
		restricted, baseline bool
	}{
		{name: "default pool (None)", pool: pool(), restricted: true, baseline: true},
		{name: "None with the full pool's settings", pool: func() *v1alpha1.RunnerPool {
			p := fullPool()
			p.Spec.DinD.Mode = v1alpha1.DinDNone
			return p
		}(), restricted: true, baseline: true},
		{name: "Rootless", pool: pool(withDinD(v1alpha1.DinDRootless))},
		{name: "Privileged", pool: pool(withDinD(v1alpha1.DinDPrivileged))},
		{name: "Privileged through the deprecated enabled", pool: pool(withDinDEnabled(true))},
		// A pool's own pod securityContext replaces the pod default; the runner container's
		// settings hold anyway.
		{name: "None with a pool pod securityContext", pool: pool(withPodTemplate(func(tpl *v1alpha1.PodTemplateOverrides) {
			tpl.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To(int64(2000))}
		})), restricted: true, baseline: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := mustBuildPod(t, tt.pool, runner(withHandle("h")))
			for _, c := range []struct {
				level psaapi.Level
				want  bool
			}{{psaapi.LevelRestricted, tt.restricted}, {psaapi.LevelBaseline, tt.baseline}} {
				got := evaluate(t, c.level, pod)
				if got.Allowed != c.want {
					t.Errorf("%s: allowed = %v, want %v (%s: %s)", c.level, got.Allowed, c.want, got.ForbiddenReason(), got.ForbiddenDetail())
				}
				for _, detail := range got.ForbiddenDetails {
					// PSA names the containers a check found wanting.
					if !strings.Contains(detail, `"`+DinDContainerName+`"`) || strings.Contains(detail, `"`+RunnerContainerName+`"`) {
						t.Errorf("%s: a check fails for something other than the DinD sidecar: %s", c.level, detail)
					}
				}
			}
			if got := evaluate(t, psaapi.LevelRestricted, withoutSidecar(pod)); !got.Allowed {
				t.Errorf("without its sidecar the pod does not meet restricted: %s: %s", got.ForbiddenReason(), got.ForbiddenDetail())
			}
		})
	}
}

// What keeps a Rootless sidecar from "restricted" and "baseline" is exactly what rootlesskit
// needs; in particular it is never privileged and never root.
func TestPodSecurityRootlessFailsOnlyForWhatRootlessNeeds(t *testing.T) {
	pod := mustBuildPod(t, pool(withDinD(v1alpha1.DinDRootless)), runner())
	baseline := evaluate(t, psaapi.LevelBaseline, pod)
	slices.Sort(baseline.ForbiddenReasons)
	// procMount: Unmasked is allowed in a pod with its own user namespace (hostUsers: false).
	if want := []string{"forbidden AppArmor profile", "seccompProfile"}; !slices.Equal(baseline.ForbiddenReasons, want) {
		t.Errorf("baseline forbids %q, want %q (%s)", baseline.ForbiddenReasons, want, baseline.ForbiddenDetail())
	}
	restricted := evaluate(t, psaapi.LevelRestricted, pod)
	for _, reason := range restricted.ForbiddenReasons {
		if reason == "privileged" || reason == "runAsNonRoot" || reason == "runAsUser" {
			t.Errorf("restricted forbids the rootless sidecar for %q: %s", reason, restricted.ForbiddenDetail())
		}
	}
}
