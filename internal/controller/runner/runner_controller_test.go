package runner

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// How a runner ended, from its pod, the operator's stop and what Forgejo says of its
// registration: exit 0 is a job run only when the registration is gone.
func TestEndOf(t *testing.T) {
	terminated := func(code int32) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod"}, Status: corev1.PodStatus{
			Phase: corev1.PodSucceeded,
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "other", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 9}}},
				{Name: RunnerContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}},
			},
		}}
	}
	with := func(pod *corev1.Pod, f func(*EndInput)) EndInput {
		in := podEnd(pod)
		f(&in)
		return in
	}
	lost := &v1alpha1.RunnerStop{Reason: "RegistrationGone", Outcome: v1alpha1.OutcomeRegistrationGone, Message: "deleted in Forgejo"}
	cases := []struct {
		name    string
		in      EndInput
		outcome v1alpha1.RunnerOutcome
		reason  string
		code    *int32
	}{
		{"task ran: registration gone", with(terminated(0), func(in *EndInput) { in.Registration = RegistrationGone }),
			v1alpha1.OutcomeSucceeded, "TaskRan", ptr(0)},
		{"exit 0 still registered: stopped while waiting", with(terminated(0), func(in *EndInput) { in.Registration = RegistrationPresent }),
			v1alpha1.OutcomeStopped, "StoppedWhileWaiting", ptr(0)},
		{"stopped by the operator for a lost registration", with(terminated(0), func(in *EndInput) {
			in.Registration, in.Stop = RegistrationGone, lost
		}), v1alpha1.OutcomeRegistrationGone, "RegistrationGone", ptr(0)},
		{"stopped, but its job was seen running", with(terminated(0), func(in *EndInput) {
			in.Registration, in.Stop, in.JobSeenRunning = RegistrationGone, lost, true
		}), v1alpha1.OutcomeSucceeded, "TaskRan", ptr(0)},
		{"stopped, exit 1 from the stop", with(terminated(1), func(in *EndInput) { in.Stop = lost }),
			v1alpha1.OutcomeRegistrationGone, "RegistrationGone", ptr(1)},
		{"stopped, pod gone", EndInput{Pod: "pod", Stop: lost}, v1alpha1.OutcomeRegistrationGone, "RegistrationGone", nil},
		{"no task", podEnd(terminated(2)), v1alpha1.OutcomeNoJob, "NoTask", ptr(2)},
		{"runner error", podEnd(terminated(1)), v1alpha1.OutcomeFailed, "RunnerError", ptr(1)},
		{"evicted", podEnd(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}), v1alpha1.OutcomeFailed, "Evicted", nil},
		{"failed without reason", podEnd(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}), v1alpha1.OutcomeFailed, "PodFailed", nil},
	}
	for _, c := range cases {
		end := EndOf(c.in)
		code := c.in.ExitCode
		if end.Outcome != c.outcome || end.Reason != c.reason || (code == nil) != (c.code == nil) || (code != nil && *code != *c.code) || end.Message == "" {
			t.Errorf("%s: got %+v, exit %v", c.name, end, code)
		}
	}
	if !NeedsRegistrationCheck(ptr(0)) || NeedsRegistrationCheck(ptr(2)) || NeedsRegistrationCheck(nil) {
		t.Error("only exit 0 needs the registration checked")
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
