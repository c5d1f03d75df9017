package runnerpod

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// TokenKey is the key of the runner token in the Secret built by BuildSecret.
const TokenKey = "token"

// BuildSecret builds the immutable Secret that hands runner's Forgejo token to its pod.
//
// token must be exactly what Forgejo returned on registration: it is stored byte for byte, and
// forgejo-runner reads `--token-url file:` verbatim, so the caller must not add a newline (and
// this function does not strip one, which would hide a caller's bug behind a silent rewrite).
// The Forgejo API token the operator registers with never belongs here.
func BuildSecret(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, token string) (*corev1.Secret, error) {
	if err := checkParents(pool, runner); err != nil {
		return nil, fmt.Errorf("building token secret: %w", err)
	}
	if token == "" {
		return nil, fmt.Errorf("building token secret for runner %s: %w", runner.Name, invalid("token is empty"))
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            SecretName(runner),
			Namespace:       runner.Namespace,
			Labels:          Labels(pool, runner),
			OwnerReferences: []metav1.OwnerReference{ownerReference(runner)},
		},
		Type: corev1.SecretTypeOpaque,
		// A registration's token never changes; immutability also spares kubelet from watching
		// one Secret per runner.
		Immutable: ptr.To(true),
		Data:      map[string][]byte{TokenKey: []byte(token)},
	}, nil
}
