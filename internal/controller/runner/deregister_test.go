package runner

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// A registration is deleted only when Forgejo shows it with the UUID the operator was given: an
// id edited in a Runner's status must not delete another runner.
func TestDeleteRegistrationChecksTheUUIDFirst(t *testing.T) {
	_, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1})
	c, err := forgejo.New(forgejo.Config{BaseURL: url, Token: "admin", Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	ours, err := c.RegisterRunner(t.Context(), "ours", "test", true)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := c.RegisterRunner(t.Context(), "theirs", "not the operator's", false)
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{}
	fj := &lazyForgejo{build: func() (*forgejo.Client, error) { return c, nil }}
	runner := &v1alpha1.Runner{}
	runner.UID = types.UID("runner-1")

	// Status edited to point at another runner's id: nothing is deleted.
	result, err := r.deleteRegistration(t.Context(), fj, runner, &v1alpha1.Registration{ID: theirs.ID, UUID: ours.UUID})
	if err != nil || !strings.Contains(result, "names another runner") {
		t.Fatalf("result %q, %v; want the mismatch reported", result, err)
	}
	if _, err := c.GetRunner(t.Context(), theirs.ID); err != nil {
		t.Fatalf("the other runner's registration was deleted: %v", err)
	}

	result, err = r.deleteRegistration(t.Context(), fj, runner, &v1alpha1.Registration{ID: ours.ID, UUID: ours.UUID})
	if err != nil || result != "deleted" {
		t.Fatalf("result %q, %v; want deleted", result, err)
	}
	if _, err := c.GetRunner(t.Context(), ours.ID); !errors.Is(err, forgejo.ErrNotFound) {
		t.Fatalf("registration still there after delete: %v", err)
	}
	result, err = r.deleteRegistration(t.Context(), fj, runner, &v1alpha1.Registration{ID: ours.ID, UUID: ours.UUID})
	if err != nil || !strings.Contains(result, "404") {
		t.Fatalf("result %q, %v; want already gone", result, err)
	}

	// Seen gone when the runner ended: Forgejo is not asked again.
	r.registrationGone.Store(runner.UID, true)
	offline := &lazyForgejo{build: func() (*forgejo.Client, error) { return nil, errors.New("must not be called") }}
	if result, err := r.deleteRegistration(t.Context(), offline, runner, &v1alpha1.Registration{ID: theirs.ID, UUID: theirs.UUID}); err != nil || !strings.Contains(result, "when the runner ended") {
		t.Fatalf("result %q, %v; want gone without asking", result, err)
	}
}
