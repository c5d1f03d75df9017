package runnerpod

import (
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

func TestBuildSecret(t *testing.T) {
	tests := []struct {
		name  string
		token string
	}{
		{"plain token", "0123456789abcdef0123456789abcdef01234567"},
		// Stored as given: forgejo-runner reads the file verbatim, and stripping here would hide
		// a caller that added the newline.
		{"newline kept as given", "0123456789abcdef\n"},
		{"non-ASCII bytes", "t\xffk\x00n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := BuildSecret(pool(), runner(), tt.token)
			if err != nil {
				t.Fatalf("BuildSecret: %v", err)
			}
			if got := s.Data[TokenKey]; string(got) != tt.token || len(s.Data) != 1 || len(s.StringData) != 0 {
				t.Errorf("data = %q, want only %s = %q", s.Data, TokenKey, tt.token)
			}
			if s.Name != testRunner+"-token" || s.Namespace != testNamespace {
				t.Errorf("secret is %s/%s", s.Namespace, s.Name)
			}
			if s.Type != corev1.SecretTypeOpaque || s.Immutable == nil || !*s.Immutable {
				t.Errorf("type %q immutable %v", s.Type, s.Immutable)
			}
			if !reflect.DeepEqual(s.Labels, Labels(pool(), runner())) {
				t.Errorf("labels = %v", s.Labels)
			}
			or := s.OwnerReferences
			if len(or) != 1 || or[0].UID != testUID || or[0].Kind != "Runner" || !*or[0].Controller || !*or[0].BlockOwnerDeletion {
				t.Errorf("owner references = %+v", or)
			}
		})
	}
}

func TestBuildSecretMatchesPodVolume(t *testing.T) {
	long := runner(withRunnerName(stringOf(253, 'x')))
	s, err := BuildSecret(pool(), long, "t")
	if err != nil {
		t.Fatal(err)
	}
	if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
		t.Errorf("secret name %q: %v", s.Name, errs)
	}
	pod := mustBuildPod(t, pool(), long)
	ra, err := ParseRunnerArgs(pod)
	if err != nil {
		t.Fatal(err)
	}
	if ra.TokenSecretName != s.Name || ra.TokenSecretKey != TokenKey {
		t.Errorf("pod reads %s/%s, secret is %s/%s", ra.TokenSecretName, ra.TokenSecretKey, s.Name, TokenKey)
	}
}

func TestBuildSecretErrors(t *testing.T) {
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
		token  string
	}{
		{"empty token", pool(), runner(), ""},
		{"nil pool", nil, runner(), "t"},
		{"no uid", pool(), runner(func(r *v1alpha1.Runner) { r.UID = "" }), "t"},
		{"other namespace", pool(), runner(func(r *v1alpha1.Runner) { r.Namespace = "x" }), "t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildSecret(tt.pool, tt.runner, tt.token)
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("error = %v, want ErrInvalidInput", err)
			}
		})
	}
}

func stringOf(n int, c byte) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

func TestRegistrationOfRecoversOnlyThisRunnersRegistration(t *testing.T) {
	rn := runner()
	s, err := BuildSecret(pool(), rn, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := RegistrationOf(s, rn); ok {
		t.Fatal("a Secret without the registration's annotations was taken for one")
	}
	SetRegistration(s, 42, "8d2a")
	if id, uuid, ok := RegistrationOf(s, rn); !ok || id != 42 || uuid != "8d2a" {
		t.Fatalf("RegistrationOf = %d, %q, %v; want 42, 8d2a, true", id, uuid, ok)
	}
	// A job's next runner has the same name, and so the same Secret name, but another uid.
	next := rn.DeepCopy()
	next.UID = "another-uid"
	if _, _, ok := RegistrationOf(s, next); ok {
		t.Fatal("the Secret of an earlier Runner of the same name was taken as this one's")
	}
	s.Annotations[AnnotationRegistrationID] = "x"
	if _, _, ok := RegistrationOf(s, rn); ok {
		t.Fatal("a malformed registration id was accepted")
	}
}
