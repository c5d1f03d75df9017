package tokenkeep

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

func pool(name, uid string) *v1alpha1.RunnerPool {
	return &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ci", UID: k8stypes.UID("uid-" + uid)}}
}

func TestBuildIsTheCacheablePoolOwnedCopy(t *testing.T) {
	p := pool("builds", "1")
	s, err := Build(p, "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "builds-deregistration-token" || s.Namespace != "ci" {
		t.Errorf("name %s/%s", s.Namespace, s.Name)
	}
	// The operator caches only Secrets with its managed-by label: the copy must carry it.
	if s.Labels[runnerpod.LabelManagedBy] != runnerpod.ManagedBy || s.Labels[runnerpod.LabelPool] != "builds" {
		t.Errorf("labels %v", s.Labels)
	}
	// What a runner leaves behind is found by the runners' app label: the copy is not that.
	if _, ok := s.Labels[runnerpod.LabelAppName]; ok {
		t.Errorf("the copy carries the runners' app label: %v", s.Labels)
	}
	if !metav1.IsControlledBy(s, p) {
		t.Error("the copy is not controlled by its pool")
	}
	if len(s.Finalizers) != 1 || s.Finalizers[0] != Finalizer {
		t.Errorf("finalizers %v", s.Finalizers)
	}
	if got, ok := Token(s, p); !ok || got != "secret-token" {
		t.Errorf("Token = %q, %v", got, ok)
	}
	if !Current(s, p, "secret-token") {
		t.Error("a fresh copy is not current")
	}
}

func TestTokenReadsOnlyThePoolsOwnCopy(t *testing.T) {
	p := pool("builds", "1")
	s, err := Build(p, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Token(s, pool("builds", "2")); ok {
		t.Error("a copy of an earlier pool of the same name was read as the new pool's")
	}
	user := s.DeepCopy()
	user.OwnerReferences = nil
	if _, ok := Token(user, p); ok {
		t.Error("a user's Secret of the copy's name was read as the copy")
	}
	unlabelled := s.DeepCopy()
	delete(unlabelled.Labels, LabelRole)
	if _, ok := Token(unlabelled, p); ok {
		t.Error("a Secret without the role label was read as the copy")
	}
	empty := s.DeepCopy()
	empty.Data = nil
	if _, ok := Token(empty, p); ok {
		t.Error("an empty copy gave a token")
	}
}

func TestCurrentWantsTheTokenAndTheFinalizer(t *testing.T) {
	p := pool("builds", "1")
	s, err := Build(p, "old")
	if err != nil {
		t.Fatal(err)
	}
	if Current(s, p, "rotated") {
		t.Error("a copy of the old token is current after a rotation")
	}
	s.Finalizers = nil
	if Current(s, p, "old") {
		t.Error("a copy without its finalizer is current: namespace deletion would take it early")
	}
}

func TestBuildRefusesWhatCannotBeOwned(t *testing.T) {
	if _, err := Build(&v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "ci"}}, "t"); err == nil {
		t.Error("a pool without a uid got a copy")
	}
	if _, err := Build(pool("x", "1"), ""); err == nil {
		t.Error("an empty token got a copy")
	}
}
