package runnerpool

import (
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// Pools that share a connection share its list of registrations: a garbage collection round
// over many pools costs one listing per connection, not one per pool.
func TestGarbageCollectionListsOncePerConnection(t *testing.T) {
	_, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1})
	var lists atomic.Int64
	fj, err := forgejo.New(forgejo.Config{BaseURL: url, Token: "admin", Scope: forgejo.GlobalScope(),
		Observer: forgejo.ObserverFunc(func(endpoint, _ string, _ time.Duration) {
			if endpoint == forgejo.EndpointListRunners {
				lists.Add(1)
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	var g orphanCollector
	shared := jobwatch.NewConnection(url, "global", "admin")
	none := func(*v1alpha1.RunnerPool, forgejo.Runner, string) {}
	for _, name := range []string{"a", "b", "c"} {
		pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ci", UID: k8stypes.UID("uid-" + name)}}
		if _, _, err := g.collect(t.Context(), fj, shared, time.Minute, pool, nil, none); err != nil {
			t.Fatal(err)
		}
	}
	if n := lists.Load(); n != 1 {
		t.Fatalf("three pools on one connection listed %d times, want 1", n)
	}
	other := jobwatch.NewConnection(url, "global", "another-token")
	if _, _, err := g.collect(t.Context(), fj, other, time.Minute, &v1alpha1.RunnerPool{}, nil, none); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load(); n != 2 {
		t.Fatalf("another connection listed %d times in all, want 2", n)
	}
}
