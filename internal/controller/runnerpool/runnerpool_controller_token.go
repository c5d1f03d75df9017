package runnerpool

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/tokenkeep"
)

// keepToken makes the pool's kept copy of its API token (see package tokenkeep) hold token, so
// that its runners can be deregistered once the pool's own Secret is gone, even by an operator
// that has restarted since. It writes only when the token changed; the copy is in the cache.
func (r *Reconciler) keepToken(ctx context.Context, pool *v1alpha1.RunnerPool, token string) error {
	want, err := tokenkeep.Build(pool, token)
	if err != nil {
		return err
	}
	var got corev1.Secret
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), &got)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.Client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Secret %s keeping pool %s's token: %w", want.Name, pool.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get Secret %s keeping pool %s's token: %w", want.Name, pool.Name, err)
	case tokenkeep.Current(&got, pool, token):
		return nil
	case !metav1.IsControlledBy(&got, pool):
		// Someone else's Secret of that name, or a copy left by an earlier pool of the same name
		// that is on its way out: never overwrite the one, wait for the other.
		logf.FromContext(ctx).Info("not keeping a copy of the pool's token: a Secret of that name is not the pool's",
			"secret", got.Name)
		return nil
	case !got.DeletionTimestamp.IsZero():
		return nil
	}
	patch := client.MergeFromWithOptions(got.DeepCopy(), client.MergeFromWithOptimisticLock{})
	got.Data = want.Data
	controllerutil.AddFinalizer(&got, tokenkeep.Finalizer)
	if err := r.Client.Patch(ctx, &got, patch); err != nil {
		return fmt.Errorf("update Secret %s keeping pool %s's token: %w", got.Name, pool.Name, err)
	}
	return nil
}

// releaseToken lets the pool's kept token go, once its runners are deregistered and the last
// garbage collection has run.
func (r *Reconciler) releaseToken(ctx context.Context, pool *v1alpha1.RunnerPool) error {
	var got corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: pool.Namespace, Name: tokenkeep.Name(pool)}, &got)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get Secret keeping pool %s's token: %w", pool.Name, err)
	}
	if !metav1.IsControlledBy(&got, pool) {
		return nil
	}
	if controllerutil.ContainsFinalizer(&got, tokenkeep.Finalizer) {
		patch := client.MergeFromWithOptions(got.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(&got, tokenkeep.Finalizer)
		if err := r.Client.Patch(ctx, &got, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("release Secret %s keeping pool %s's token: %w", got.Name, pool.Name, err)
		}
	}
	if err := r.Client.Delete(ctx, &got); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete Secret %s keeping pool %s's token: %w", got.Name, pool.Name, err)
	}
	return nil
}
