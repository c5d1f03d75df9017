// Package tokenkeep builds the Secret in which a RunnerPool keeps a copy of its Forgejo API
// token for one use only: deleting the registrations of its runners once the pool's own token
// Secret is gone.
//
// Deleting a namespace deletes the pool's token Secret, the pool, its Runners and their pods in
// no useful order, and the Runners' finalizers then need the token to deregister. Holding the
// user's Secret with a finalizer would make `kubectl delete secret` hang for as long as a job
// runs, and block recreating a Secret of the same name to rotate a token; a copy the operator
// owns, held by its own finalizer until the pool's last runner is deregistered, costs neither and
// outlives an operator restart, which a token kept in memory does not.
package tokenkeep

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// Finalizer keeps the copy until the pool's finalizer lets it go, after the pool's last runner.
const Finalizer = "forgejo.brooktrails.org/deregistration-token"

// TokenKey is the key of the token in the copy.
const TokenKey = "token"

// LabelRole tells the copy apart from the runners' own Secrets, which carry the same
// managed-by label (and so are in the operator's cache, as the copy is).
const (
	LabelRole = "forgejo.brooktrails.org/role"
	Role      = "deregistration-token"
)

// Name is the name of the pool's copy. Runner Secrets end in "-token" after a runner name, and
// runner names never end in "-deregistration", so the two cannot meet.
func Name(pool *v1alpha1.RunnerPool) string {
	return pool.Name + "-deregistration-token"
}

// Build returns the pool's copy of token, owned by the pool and held by Finalizer.
func Build(pool *v1alpha1.RunnerPool, token string) (*corev1.Secret, error) {
	if pool.Name == "" || pool.Namespace == "" || pool.UID == "" {
		return nil, fmt.Errorf("build deregistration token Secret: the pool needs a name, namespace and uid")
	}
	if token == "" {
		return nil, fmt.Errorf("build deregistration token Secret of pool %s: the token is empty", pool.Name)
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      Name(pool),
			Namespace: pool.Namespace,
			// The managed-by label puts it in the operator's cache; not the runners' app label,
			// which tells what a runner leaves behind.
			Labels: map[string]string{
				runnerpod.LabelPool:      runnerpod.LabelValue(pool.Name),
				runnerpod.LabelManagedBy: runnerpod.ManagedBy,
				LabelRole:                Role,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1alpha1.GroupVersion.String(), Kind: "RunnerPool", Name: pool.Name, UID: pool.UID,
				Controller: ptr.To(true),
			}},
			Finalizers: []string{Finalizer},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{TokenKey: []byte(token)},
	}, nil
}

// Token returns the token a copy holds for pool: only a copy the pool controls counts, so that a
// user's Secret that happens to have the name is never read as one.
func Token(secret *corev1.Secret, pool *v1alpha1.RunnerPool) (string, bool) {
	if !metav1.IsControlledBy(secret, pool) || secret.Labels[LabelRole] != Role {
		return "", false
	}
	token := string(secret.Data[TokenKey])
	return token, token != ""
}

// Current reports whether secret is the pool's copy, holds token and keeps its finalizer: if so
// there is nothing to write.
func Current(secret *corev1.Secret, pool *v1alpha1.RunnerPool, token string) bool {
	got, ok := Token(secret, pool)
	if !ok || got != token {
		return false
	}
	for _, f := range secret.Finalizers {
		if f == Finalizer {
			return true
		}
	}
	return false
}
