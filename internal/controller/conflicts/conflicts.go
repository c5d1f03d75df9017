// Package conflicts turns an optimistic-concurrency conflict, met while a reconcile writes an
// object it read from the cache, into a quiet retry. The object changed since it was read (a
// user's edit, or a write of the operator's that the cache had not shown yet); the change brings
// its own reconcile, and the next look uses what is current. Returned as an error, each conflict
// would be logged as a "Reconciler error", counted in the error metrics and reported to Sentry,
// though nothing is wrong.
package conflicts

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// RetryAfter is when a reconcile that met a conflict looks again, should no event about the
// change come first.
const RetryAfter = time.Second

// Retry passes res and err through, unless err is a conflict: then the reconcile is retried
// after RetryAfter, and the conflict is logged at debug level only.
func Retry(ctx context.Context, res reconcile.Result, err error) (reconcile.Result, error) {
	if err == nil || !apierrors.IsConflict(err) {
		return res, err
	}
	logf.FromContext(ctx).V(1).Info("the object changed while it was reconciled; looking again", "reason", err.Error())
	return reconcile.Result{RequeueAfter: RetryAfter}, nil
}
