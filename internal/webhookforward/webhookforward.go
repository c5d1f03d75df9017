// Package webhookforward lets every replica of the operator receive Forgejo's webhook
// deliveries while only the leader acts on them.
//
// Why forwarding: only the leader polls Forgejo and creates runners, so only it can act on a
// delivery. Before, a replica that was not the leader reported not ready so that the webhook
// Service sent deliveries to the leader alone; but then a Deployment of two replicas never had
// more than one ready pod, and a rolling update (maxUnavailable 0) never finished. Readiness
// now says only whether a replica can serve, and a replica that is not the leader verifies a
// delivery as the leader would (signature, replay, pools) and sends the same signed request on
// to the leader, which verifies it again. The alternatives were weighed:
//
//   - The leader labels its own pod and the webhook Service selects that label: it needs the
//     right to patch the operator's pods, leaves the Service without endpoints from a leader's
//     loss until the next leader has labelled its pod and the endpoints have caught up, and a
//     restarted container must clear a stale label before anyone trusts it.
//   - A replica hands the leader a bare "poll now" instead of the delivery: the leader would
//     then have to trust its peers, which needs an authentication of its own. Sending the
//     delivery as Forgejo signed it needs no trust between replicas: a forged or altered
//     forward fails the leader's signature check like any other request.
//
// The leader is found through the leader election Lease: each replica's identity there ends
// with "@" and the address its webhook receiver is reached at (the pod IP from the downward
// API and the receiver's port), so a replica that is not the leader reads the Lease's
// holderIdentity and knows where to send. A forwarded request carries ForwardedHeader and is
// never forwarded again, so a stale Lease cannot make two replicas send a delivery back and
// forth. A delivery that cannot be forwarded (no leader yet, the leader just died) is dropped
// and counted: Forgejo does not redeliver anyway, and the leader's periodic poll finds the
// jobs the delivery was a cue for.
package webhookforward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

// ForwardedHeader marks a delivery one replica sent on to the leader. Anyone can set it; all it
// does is keep the receiving replica from forwarding the request again.
const ForwardedHeader = "X-Forgejo-Runner-Operator-Forwarded"

// addressSeparator ends a leader election identity's own part and begins its address. Host
// names and UUIDs never contain it.
const addressSeparator = "@"

// DefaultTimeout bounds one forward. Forgejo gives up on a delivery after 5 s by default, and
// the forward happens while Forgejo waits.
const DefaultTimeout = 3 * time.Second

// MetricForwardsTotal counts deliveries a replica that was not the leader handled, by result.
const MetricForwardsTotal = "forgejo_runner_operator_webhook_forwards_total"

// Forward results.
const (
	ResultForwarded = "forwarded" // the leader accepted it (2xx)
	ResultFailed    = "failed"    // the leader could not be reached or refused it
	ResultNoLeader  = "no_leader" // no Lease, no holder, or a holder without an address
	ResultLoop      = "loop"      // it had been forwarded already and this replica is not the leader
)

// Identity is a leader election identity that carries the address the replica's webhook
// receiver is reached at: host_uuid@addr, or host_uuid when addr is empty (the replica then
// receives no forwards).
func Identity(host, addr string) string {
	id := host + "_" + string(uuid.NewUUID())
	if addr == "" {
		return id
	}
	return id + addressSeparator + addr
}

// AddressOf is the address an identity carries, if it carries a valid host:port.
func AddressOf(identity string) (string, bool) {
	i := strings.LastIndex(identity, addressSeparator)
	if i < 0 {
		return "", false
	}
	addr := identity[i+1:]
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return "", false
	}
	return addr, true
}

// AdvertisedAddress joins a replica's IP with the port of its webhook bind address (":9000" or
// "0.0.0.0:9000"); "" when either is missing or the receiver is off.
func AdvertisedAddress(ip, bindAddr string) string {
	if ip == "" || bindAddr == "" || bindAddr == "0" {
		return ""
	}
	_, port, err := net.SplitHostPort(bindAddr)
	if err != nil || port == "" || port == "0" {
		return ""
	}
	return net.JoinHostPort(ip, port)
}

// inClusterNamespace is where a pod's namespace is mounted with its service account.
const inClusterNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// LeaseNamespace is the namespace of the leader election Lease: the flag when set, else the
// pod's own, as controller-runtime chooses it.
func LeaseNamespace(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	data, err := os.ReadFile(inClusterNamespace)
	if err != nil {
		return "", fmt.Errorf("not running in a pod (%w): set --leader-election-namespace", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// NewLeaseLock is the Lease lock controller-runtime would make, with identity as the holder
// identity so that peers can find the leader's address. renewDeadline bounds each request as
// controller-runtime does, so that one hung request cannot cost the lease.
func NewLeaseLock(cfg *rest.Config, lease types.NamespacedName, identity string, renewDeadline time.Duration) (resourcelock.Interface, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	if renewDeadline > 0 {
		cfg.Timeout = max(renewDeadline/2, time.Second)
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	coordination, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, lease.Namespace, lease.Name, core, coordination,
		resourcelock.ResourceLockConfig{Identity: identity})
	if err != nil {
		return nil, fmt.Errorf("leader election lock: %w", err)
	}
	return lock, nil
}

// Forwarder is a webhook.EventSink that hands a delivery to Local on the leader and forwards
// it to the leader elsewhere. Its Wrap must wrap the webhook handler, so that the delivery as
// received is at hand when the sink is called.
type Forwarder struct {
	// Local acts on deliveries on the leader.
	Local webhook.EventSink
	// Elected is closed once this replica leads (controller-runtime's mgr.Elected()).
	Elected <-chan struct{}
	// Leases reads the leader election Lease, uncached: it is read only for a delivery a
	// replica that is not the leader received.
	Leases client.Reader
	// Lease names the leader election Lease.
	Lease types.NamespacedName
	// Self is this replica's identity in the Lease.
	Self string
	// Path is the path the leader's receiver serves (operator.WebhookPath).
	Path string
	// MaxBodyBytes bounds the body kept for forwarding; the webhook handler refuses larger.
	MaxBodyBytes int64
	// HTTP sends the forwards; nil uses a client with DefaultTimeout.
	HTTP *http.Client
	// Log says what happened to each forward.
	Log logr.Logger
	// Results, when set, counts forwards by result.
	Results *prometheus.CounterVec
}

var _ webhook.EventSink = (*Forwarder)(nil)

// NewResultsCounter registers the forwards counter on reg, every result present from the start.
func NewResultsCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricForwardsTotal,
		Help: "Verified webhook deliveries a replica that was not the leader sent on to the leader, by result (forwarded, failed, no_leader, loop).",
	}, []string{"result"})
	c, err := promreg.Register(reg, c)
	if err != nil {
		return nil, fmt.Errorf("register webhook forward metrics: %w", err)
	}
	for _, r := range []string{ResultForwarded, ResultFailed, ResultNoLeader, ResultLoop} {
		c.WithLabelValues(r)
	}
	return c, nil
}

type receivedKey struct{}

// received is a delivery as it arrived: what is forwarded, byte for byte where it matters.
type received struct {
	header    http.Header
	body      []byte
	forwarded bool
}

// Wrap keeps each request's headers and body (up to MaxBodyBytes) for the sink, then serves it
// with next. Only a delivery next verifies reaches the sink and so is ever forwarded.
func (f *Forwarder) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		limit := f.MaxBodyBytes
		if limit <= 0 {
			limit = webhook.DefaultMaxBodyBytes
		}
		// Read at most one byte more than the handler allows, and give it the same bytes
		// followed by whatever is left: it decides about size and read errors as before.
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		if err == nil && int64(len(body)) <= limit {
			rec := &received{header: r.Header.Clone(), body: body, forwarded: r.Header.Get(ForwardedHeader) != ""}
			r = r.WithContext(context.WithValue(r.Context(), receivedKey{}, rec))
		}
		next.ServeHTTP(w, r)
	})
}

// HandleJobEvent implements webhook.EventSink.
func (f *Forwarder) HandleJobEvent(ctx context.Context, ev webhook.JobEvent) {
	if f.leading() {
		f.Local.HandleJobEvent(ctx, ev)
		return
	}
	f.forward(ctx, ev.DeliveryID)
}

// HandleRepositoryEvent implements webhook.EventSink.
func (f *Forwarder) HandleRepositoryEvent(ctx context.Context, ev webhook.RepositoryEvent) {
	if f.leading() {
		f.Local.HandleRepositoryEvent(ctx, ev)
		return
	}
	f.forward(ctx, ev.DeliveryID)
}

func (f *Forwarder) leading() bool {
	select {
	case <-f.Elected:
		return true
	default:
		return false
	}
}

func (f *Forwarder) count(result string) {
	if f.Results != nil {
		f.Results.WithLabelValues(result).Inc()
	}
}

// forward sends the delivery in ctx to the leader the Lease names.
func (f *Forwarder) forward(ctx context.Context, deliveryID string) {
	log := f.Log.WithValues("delivery", webhook.SafeID(deliveryID))
	rec, _ := ctx.Value(receivedKey{}).(*received)
	if rec == nil {
		// Wrap was not in front of the handler: a wiring mistake, not the sender's.
		f.count(ResultFailed)
		log.Error(errors.New("the delivery as received is not at hand"), "webhook delivery not forwarded to the leader")
		return
	}
	if rec.forwarded {
		f.count(ResultLoop)
		log.Info("webhook delivery forwarded here, but this replica does not lead (any more): dropped; the leader's next poll finds its jobs")
		return
	}
	addr, err := f.leaderAddress(ctx)
	if err != nil {
		f.count(ResultNoLeader)
		log.Info("webhook delivery not forwarded: no leader to forward to; the leader's next poll finds its jobs", "reason", err.Error())
		return
	}
	if err := f.send(ctx, addr, rec); err != nil {
		f.count(ResultFailed)
		log.Info("webhook delivery not forwarded to the leader; its next poll finds the jobs", "leader", addr, "error", err.Error())
		return
	}
	f.count(ResultForwarded)
	log.V(1).Info("webhook delivery forwarded to the leader", "leader", addr)
}

// leaderAddress reads the Lease's holder and the address its identity carries.
func (f *Forwarder) leaderAddress(ctx context.Context) (string, error) {
	var lease coordinationv1.Lease
	if err := f.Leases.Get(ctx, f.Lease, &lease); err != nil {
		return "", fmt.Errorf("read Lease %s: %w", f.Lease, err)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	switch holder {
	case "":
		return "", fmt.Errorf("no holder in Lease %s", f.Lease)
	case f.Self:
		// The Lease is ours but the manager has not said so yet: acting locally now would
		// find no pools registered with the jobs watcher.
		return "", errors.New("this replica is becoming the leader")
	}
	addr, ok := AddressOf(holder)
	if !ok {
		return "", fmt.Errorf("the leader %q carries no address (started without --advertise-address or POD_IP?)", holder)
	}
	return addr, nil
}

// hopByHop are headers of one connection, not of the delivery.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func (f *Forwarder) send(ctx context.Context, addr string, rec *received) error {
	httpClient := f.HTTP
	if httpClient == nil {
		httpClient = &http.Client{Timeout: DefaultTimeout}
	}
	// The sender waits for the answer; the forward must not outlive it, but its own
	// cancellation (Forgejo giving up) should not cut a forward that is nearly done.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+f.Path, bytes.NewReader(rec.body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header = rec.header.Clone()
	for _, h := range hopByHop {
		req.Header.Del(h)
	}
	req.Header.Set(ForwardedHeader, "1")
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("post to the leader: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the leader answered %d %s", resp.StatusCode, strings.TrimSpace(string(answer)))
	}
	return nil
}
