package runnerpod

import (
	"fmt"
	"strconv"

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

// Annotations on a token Secret that name the registration its token belongs to. They let an
// operator that stopped between storing the token and recording the registration in the
// Runner's status recover the registration instead of making a second one.
const (
	AnnotationRegistrationID   = "forgejo.brooktrails.org/registration-id"
	AnnotationRegistrationUUID = "forgejo.brooktrails.org/registration-uuid"
)

// SetRegistration names the registration the Secret's token belongs to.
func SetRegistration(secret *corev1.Secret, id int64, uuid string) {
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[AnnotationRegistrationID] = strconv.FormatInt(id, 10)
	secret.Annotations[AnnotationRegistrationUUID] = uuid
}

// RegistrationOf returns the registration a token Secret of runner names, if the Secret was
// made for this very Runner (a job's next runner reuses the name, never the uid).
func RegistrationOf(secret *corev1.Secret, runner *v1alpha1.Runner) (id int64, uuid string, ok bool) {
	if !metav1.IsControlledBy(secret, runner) {
		return 0, "", false
	}
	id, err := strconv.ParseInt(secret.Annotations[AnnotationRegistrationID], 10, 64)
	uuid = secret.Annotations[AnnotationRegistrationUUID]
	if err != nil || id <= 0 || uuid == "" || len(secret.Data[TokenKey]) == 0 {
		return 0, "", false
	}
	return id, uuid, true
}
