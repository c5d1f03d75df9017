package runnerpod

import (
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// ErrInvalidInput is wrapped by every builder error caused by the pool or runner passed in, so
// callers can tell a spec to report in a condition from a bug to retry.
var ErrInvalidInput = errors.New("invalid runner input")

// invalid wraps ErrInvalidInput with a description of what is wrong.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}

// checkParents rejects a pool/runner pair no child object can be built from. The API server
// would refuse an owner reference without a UID, and a child placed in another namespace than
// its owner would be garbage-collected at once.
func checkParents(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) error {
	switch {
	case pool == nil:
		return invalid("pool is nil")
	case runner == nil:
		return invalid("runner is nil")
	case runner.Name == "":
		return invalid("runner has no name")
	case runner.UID == "":
		return invalid("runner %s has no UID; build children only from a Runner read from the API server", runner.Name)
	case runner.Namespace != pool.Namespace:
		return invalid("runner %s is in namespace %q but pool %s is in %q", runner.Name, runner.Namespace, pool.Name, pool.Namespace)
	case runner.Spec.PoolName != pool.Name:
		return invalid("runner %s belongs to pool %q, not %q", runner.Name, runner.Spec.PoolName, pool.Name)
	}
	return nil
}

// ownerReference makes runner the controller of a child, so deleting the Runner deletes the child
// and foreground deletion of the Runner waits for it.
func ownerReference(runner *v1alpha1.Runner) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "Runner",
		Name:               runner.Name,
		UID:                runner.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}
