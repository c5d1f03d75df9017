package runner

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

func TestPodOutcome(t *testing.T) {
	terminated := func(code int32) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{
			Phase: corev1.PodSucceeded,
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "other", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 9}}},
				{Name: RunnerContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}},
			},
		}}
	}
	cases := []struct {
		name    string
		pod     *corev1.Pod
		outcome v1alpha1.RunnerOutcome
		reason  string
		code    *int32
	}{
		{"task ran", terminated(0), v1alpha1.OutcomeSucceeded, "TaskRan", ptr(0)},
		{"no task", terminated(2), v1alpha1.OutcomeNoJob, "NoTask", ptr(2)},
		{"runner error", terminated(1), v1alpha1.OutcomeFailed, "RunnerError", ptr(1)},
		{"evicted", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}, v1alpha1.OutcomeFailed, "Evicted", nil},
		{"failed without reason", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, v1alpha1.OutcomeFailed, "PodFailed", nil},
	}
	for _, c := range cases {
		outcome, code, reason := PodOutcome(c.pod)
		if outcome != c.outcome || reason != c.reason || (code == nil) != (c.code == nil) || (code != nil && *code != *c.code) {
			t.Errorf("%s: got %s %v %s", c.name, outcome, code, reason)
		}
	}
}

func ptr(v int32) *int32 { return &v }

func TestDescriptionMarksThePool(t *testing.T) {
	pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ci", UID: "uid-1"}}
	rn := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: "p-abc", Namespace: "ci"}}
	d := Description(pool, rn)
	for _, want := range []string{DescriptionPrefix, "pool=ci/p", "pool-uid=uid-1", "runner=p-abc"} {
		if !strings.Contains(d, want) {
			t.Errorf("description %q lacks %q", d, want)
		}
	}
	if RegistrationName(rn) != "ci.p-abc" {
		t.Errorf("registration name %q", RegistrationName(rn))
	}
}
