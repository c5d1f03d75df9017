package webhookforward

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

func TestAddressOf(t *testing.T) {
	for identity, want := range map[string]string{
		Identity("pod-a", "10.1.2.3:9000"):           "10.1.2.3:9000",
		Identity("pod-a", "[fd00::1]:9000"):          "[fd00::1]:9000",
		Identity("pod-a", ""):                        "",
		"pod-a_6a0c3e7e-1111-2222-3333-444455556666": "",
		"pod@":         "",
		"pod@10.1.2.3": "",
	} {
		got, ok := AddressOf(identity)
		if got != want || ok != (want != "") {
			t.Errorf("AddressOf(%q) = %q, %v; want %q", identity, got, ok, want)
		}
	}
	if a, b := Identity("h", "1.2.3.4:1"), Identity("h", "1.2.3.4:1"); a == b {
		t.Errorf("two identities are both %q: replicas on one host would be one holder", a)
	}
	for _, tc := range []struct{ ip, bind, want string }{
		{"10.0.0.7", ":9000", "10.0.0.7:9000"},
		{"10.0.0.7", "0.0.0.0:9000", "10.0.0.7:9000"},
		{"", ":9000", ""},
		{"10.0.0.7", "0", ""},
		{"10.0.0.7", "", ""},
	} {
		if got := AdvertisedAddress(tc.ip, tc.bind); got != tc.want {
			t.Errorf("AdvertisedAddress(%q, %q) = %q, want %q", tc.ip, tc.bind, got, tc.want)
		}
	}
}

// recordingSink remembers what the leader acted on.
type recordingSink struct {
	mu    sync.Mutex
	repos []string
}

func (s *recordingSink) HandleJobEvent(context.Context, webhook.JobEvent) {}
func (s *recordingSink) HandleRepositoryEvent(_ context.Context, ev webhook.RepositoryEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos = append(s.repos, ev.Repository)
}

func (s *recordingSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.repos...)
}

var secret = []byte("hook-secret")

// replica is one operator's receiver: a Forwarder in front of a real webhook handler.
func replica(t *testing.T, self string, elected bool, lease *coordinationv1.Lease) (*httptest.Server, *recordingSink, *prometheus.CounterVec) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	local := &recordingSink{}
	results, err := NewResultsCounter(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	electedCh := make(chan struct{})
	if elected {
		close(electedCh)
	}
	fwd := &Forwarder{
		Local: local, Elected: electedCh, Self: self, Path: "/webhook/forgejo", Log: logr.Discard(), Results: results,
		Leases: fake.NewClientBuilder().WithScheme(scheme).WithObjects(lease).Build(),
		Lease:  types.NamespacedName{Namespace: lease.Namespace, Name: lease.Name},
	}
	handler, err := webhook.New(webhook.Options{Secrets: webhook.StaticSecrets{secret}, Sink: fwd})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhook/forgejo", fwd.Wrap(handler))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, local, results
}

func deliver(t *testing.T, url, id string, body []byte, extra http.Header) int {
	t.Helper()
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/webhook/forgejo", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forgejo-Event", "push")
	req.Header.Set("X-Forgejo-Delivery", id)
	req.Header.Set("X-Forgejo-Signature", hex.EncodeToString(mac.Sum(nil)))
	for k, v := range extra {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestFollowerForwardsVerifiedDeliveriesToTheLeader: a delivery sent to a replica that does not
// lead reaches the leader's sink, as the leader verified it; a forged one and a forwarded one
// go no further.
func TestFollowerForwardsVerifiedDeliveriesToTheLeader(t *testing.T) {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "lock"}}
	leaderSrv, leaderSink, _ := replica(t, "leader", true, lease)
	leaderIdentity := "leader-pod_1" + addressSeparator + strings.TrimPrefix(leaderSrv.URL, "http://")
	lease.Spec.HolderIdentity = ptr.To(leaderIdentity)
	followerSrv, followerSink, results := replica(t, "follower-pod_2@127.0.0.1:1", false, lease)

	body := []byte(`{"ref":"refs/heads/main","repository":{"id":1,"full_name":"acme/app","owner":{"id":2}}}`)
	if code := deliver(t, followerSrv.URL, "d-1", body, nil); code != http.StatusAccepted {
		t.Fatalf("the follower answered %d to a signed delivery, want 202", code)
	}
	if got := leaderSink.got(); len(got) != 1 || got[0] != "acme/app" {
		t.Errorf("the leader acted on %v, want the one delivery for acme/app", got)
	}
	if got := followerSink.got(); len(got) != 0 {
		t.Errorf("the follower acted on %v itself", got)
	}
	if n := testutil.ToFloat64(results.WithLabelValues(ResultForwarded)); n != 1 {
		t.Errorf("forwarded counter = %v, want 1", n)
	}

	// Forged: the follower refuses it, the leader never hears of it.
	if code := deliver(t, followerSrv.URL, "d-2", []byte(`{"repository":{"full_name":"acme/other"}}`), http.Header{"X-Forgejo-Signature": {"00"}}); code != http.StatusUnauthorized {
		t.Errorf("a forged delivery got %d, want 401", code)
	}
	// Already forwarded once: never sent on again.
	body2 := []byte(`{"ref":"refs/heads/dev","repository":{"id":1,"full_name":"acme/app","owner":{"id":2}}}`)
	if code := deliver(t, followerSrv.URL, "d-3", body2, http.Header{ForwardedHeader: {"1"}}); code != http.StatusAccepted {
		t.Errorf("a forwarded delivery got %d, want 202", code)
	}
	if got := leaderSink.got(); len(got) != 1 {
		t.Errorf("the leader acted on %v, want the first delivery only", got)
	}
	if n := testutil.ToFloat64(results.WithLabelValues(ResultLoop)); n != 1 {
		t.Errorf("loop counter = %v, want 1", n)
	}
}

// TestNoLeaderAddressDropsTheDelivery: a holder without an address (an older replica) gets
// nothing, and the follower says so in its counter.
func TestNoLeaderAddressDropsTheDelivery(t *testing.T) {
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "lock"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("old-pod_1")},
	}
	srv, sink, results := replica(t, "me_2@127.0.0.1:1", false, lease)
	body := []byte(`{"repository":{"id":1,"full_name":"acme/app","owner":{"id":2}}}`)
	if code := deliver(t, srv.URL, "d-1", body, nil); code != http.StatusAccepted {
		t.Fatalf("got %d, want 202", code)
	}
	if n := testutil.ToFloat64(results.WithLabelValues(ResultNoLeader)); n != 1 || len(sink.got()) != 0 {
		t.Errorf("no_leader = %v, local deliveries %v; want 1 and none", n, sink.got())
	}
}
