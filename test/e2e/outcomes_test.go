package e2e

import (
	"fmt"
	"testing"
	"time"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// A waiting runner whose registration is deleted in Forgejo (by an admin) would retry
// Unauthenticated for ever, as forgejo-runner does: the pool confirms the registration gone,
// stops the runner and records it as RegistrationGone, never as a job run, and a new warm
// runner takes its place.
func TestRunnerWhoseRegistrationWasDeletedIsEndedAndRecorded(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "lost", func(p *v1alpha1.RunnerPool) { p.Spec.Scaling.MinIdle = 1 })
	var first v1alpha1.Runner
	eventually.True(t, time.Minute, "a warm runner waiting for a task", func() (bool, string) {
		rs := w.runners(t, "lost")
		if len(rs) != 1 || rs[0].Status.Phase != v1alpha1.RunnerIdle || rs[0].Status.Registration == nil {
			return false, fmt.Sprintf("%d runners", len(rs))
		}
		first = rs[0]
		return true, ""
	})
	admin, err := forgejo.New(forgejo.Config{BaseURL: w.url, Token: "admin-token", Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the runner polls for a task
	if err := admin.DeleteRunner(t.Context(), first.Status.Registration.ID); err != nil {
		t.Fatal(err)
	}
	var rec v1alpha1.RunnerRecord
	eventually.True(t, time.Minute, "the runner recorded as RegistrationGone", func() (bool, string) {
		for _, r := range w.pool(t, "lost").Status.RecentRunners {
			if r.UID == first.UID {
				rec = r
				return true, ""
			}
		}
		return false, "no record yet"
	})
	if rec.Outcome != v1alpha1.OutcomeRegistrationGone || rec.Reason != "RegistrationGone" || rec.Message == "" {
		t.Fatalf("record %+v, want outcome and reason RegistrationGone", rec)
	}
	eventually.True(t, time.Minute, "a new warm runner, the old one gone", func() (bool, string) {
		rs := w.runners(t, "lost")
		return len(rs) == 1 && rs[0].UID != first.UID, fmt.Sprintf("%d runners", len(rs))
	})
}
