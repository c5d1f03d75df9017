package runnerpool

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
)

func withRegistered(status metav1.ConditionStatus, reason string, at time.Time) v1alpha1.Runner {
	var rn v1alpha1.Runner
	rn.Status.Conditions = []metav1.Condition{{Type: runner.ConditionRegistered, Status: status, Reason: reason,
		Message: reason, LastTransitionTime: metav1.NewTime(at)}}
	return rn
}

func TestRegistrationRefusalIsTheNewestRefusal(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if c := RegistrationRefusal(nil); c != nil {
		t.Errorf("no runners gave %+v", c)
	}
	if c := RegistrationRefusal([]v1alpha1.Runner{withRegistered(metav1.ConditionTrue, "Registered", t0), {}}); c != nil {
		t.Errorf("registered runners gave %+v", c)
	}
	got := RegistrationRefusal([]v1alpha1.Runner{
		withRegistered(metav1.ConditionFalse, "ScopeNotVisible", t0),
		withRegistered(metav1.ConditionTrue, "Registered", t0.Add(2*time.Minute)),
		withRegistered(metav1.ConditionFalse, "TokenScopeMissing", t0.Add(time.Minute)),
	})
	if got == nil || got.Reason != "TokenScopeMissing" {
		t.Errorf("got %+v, want the newest refusal, TokenScopeMissing", got)
	}

	pool := &v1alpha1.RunnerPool{}
	pool.Generation = 3
	status := &v1alpha1.RunnerPoolStatus{Conditions: []metav1.Condition{{Type: ConditionForgejoReachable, Status: metav1.ConditionTrue, Reason: "JobsListed"}}}
	reportRegistrationRefusal(status, pool, []v1alpha1.Runner{withRegistered(metav1.ConditionFalse, "NotSiteAdmin", t0)})
	c := status.Conditions[0]
	if c.Status != metav1.ConditionFalse || c.Reason != "NotSiteAdmin" || c.Message != "registering runners: NotSiteAdmin" || c.ObservedGeneration != 3 {
		t.Errorf("ForgejoReachable %+v, want False NotSiteAdmin about registering runners", c)
	}
}
