package cluster

import (
	"context"
	"sync/atomic"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CountingReader counts the Gets that reach the reader it wraps (the API server, in tests that
// check what is read once and what every time).
type CountingReader struct {
	client.Reader
	gets atomic.Int64
}

// Get counts and passes on.
func (r *CountingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.gets.Add(1)
	return r.Reader.Get(ctx, key, obj, opts...)
}

// Gets is how many Gets were made.
func (r *CountingReader) Gets() int64 { return r.gets.Load() }
