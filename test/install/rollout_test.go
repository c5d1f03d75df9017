package install

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhookforward"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// processNode is a node the test plays the kubelet for: kwok leaves it alone (it lacks kwok's
// annotation), and each pod bound to it is an operator process on this machine.
const processNode = "process-node"

// kubelet runs an operator process for each of the operator's pods on processNode, reports the
// pod Ready exactly when the process's /readyz answers 200 (as a kubelet's readiness probe
// would), and stops the process when the pod is deleted.
type kubelet struct {
	w          *world
	namespace  string
	selector   client.MatchingLabels
	kubeconfig string
	t          *testing.T

	mu    sync.Mutex
	procs map[types.UID]*podProcess
	next  int
}

type podProcess struct {
	pod  string
	ip   string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (p *podProcess) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *podProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (k *kubelet) run(ctx context.Context) {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		var pods corev1.PodList
		if err := k.w.cluster.Client.List(ctx, &pods, client.InNamespace(k.namespace), k.selector); err != nil {
			continue
		}
		for i := range pods.Items {
			k.sync(ctx, &pods.Items[i])
		}
	}
}

func (k *kubelet) sync(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.NodeName != processNode {
		return
	}
	k.mu.Lock()
	p := k.procs[pod.UID]
	k.mu.Unlock()
	if !pod.DeletionTimestamp.IsZero() {
		if p != nil {
			p.stop()
		}
		_ = k.w.cluster.Client.Delete(ctx, pod, client.GracePeriodSeconds(0))
		return
	}
	if p == nil {
		var err error
		if p, err = k.start(pod); err != nil {
			k.t.Errorf("start the operator for pod %s: %v", pod.Name, err)
			return
		}
	}
	ready := !p.exited() && probe(ctx, "http://"+p.ip+":8081/readyz")
	k.report(ctx, pod, p.ip, ready)
}

// start runs the pod's container as a process: its arguments as the chart rendered them, its
// address as the pod IP (a loopback address of its own), its credentials a token of the
// chart's ServiceAccount.
func (k *kubelet) start(pod *corev1.Pod) (*podProcess, error) {
	k.mu.Lock()
	k.next++
	ip := fmt.Sprintf("127.0.0.%d", 10+k.next)
	k.mu.Unlock()
	args := append([]string{}, pod.Spec.Containers[0].Args...)
	args = append(args, "--kubeconfig="+k.kubeconfig, "--leader-election-namespace="+k.namespace,
		"--health-probe-bind-address="+ip+":8081", "--metrics-bind-address="+ip+":8443", "--webhook-bind-address="+ip+":9000",
		// A lease handed over in seconds, as the chart's defaults would in minutes' worth of a
		// busy machine.
		"--leader-election-lease-duration=6s", "--leader-election-renew-deadline=4s", "--leader-election-retry-period=1s")
	logPath := filepath.Join(k.w.dir, pod.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(k.w.bin, args...)
	cmd.Env = append(os.Environ(), "POD_IP="+ip)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	p := &podProcess{pod: pod.Name, ip: ip, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	k.mu.Lock()
	k.procs[pod.UID] = p
	k.mu.Unlock()
	return p, nil
}

func (k *kubelet) stopAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		p.stop()
	}
}

// byIP is the process that has this pod IP.
func (k *kubelet) byIP(ip string) *podProcess {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		if p.ip == ip && !p.exited() {
			return p
		}
	}
	return nil
}

func (k *kubelet) logs() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, p := range k.procs {
		data, _ := os.ReadFile(p.log)
		fmt.Fprintf(&b, "=== %s (%s)\n%s\n", p.pod, p.ip, data)
	}
	return b.String()
}

func probe(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// report writes the pod's status as a kubelet would: Running, its IP, Ready as probed.
func (k *kubelet) report(ctx context.Context, pod *corev1.Pod, ip string, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	current := corev1.ConditionUnknown
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			current = c.Status
		}
	}
	if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP == ip && current == status {
		return
	}
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fresh corev1.Pod
		if err := k.w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pod), &fresh); err != nil {
			return err
		}
		now := metav1.Now()
		fresh.Status.Phase = corev1.PodRunning
		fresh.Status.PodIP, fresh.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		fresh.Status.HostIP = "127.0.0.1"
		if fresh.Status.StartTime == nil {
			fresh.Status.StartTime = &now
		}
		fresh.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		}
		fresh.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: fresh.Spec.Containers[0].Name, Image: fresh.Spec.Containers[0].Image, Ready: ready, Started: ptrTo(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}}
		return k.w.cluster.Client.Status().Update(ctx, &fresh)
	})
}

func ptrTo[T any](v T) *T { return &v }

func (w *world) addProcessNode(t *testing.T) {
	t.Helper()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("20"),
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: processNode, Labels: map[string]string{
		"kubernetes.io/hostname": processNode, "kubernetes.io/os": "linux", "forgejo.brooktrails.org/test-node": "process",
	}}}
	if err := w.cluster.Client.Create(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	base := node.DeepCopy()
	node.Status.Capacity, node.Status.Allocatable = capacity, capacity
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := w.cluster.Client.Status().Patch(t.Context(), node, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

// TestRollingUpdateFinishes: the chart's two replicas both become ready (one leads, one does
// not), a webhook sent to the one that does not lead gets a job served at once, and a rolling
// update (surge 1, unavailable 0) runs to completion, after which the same holds again.
func TestRollingUpdateFinishes(t *testing.T) {
	w := startWorld(t)
	w.addProcessNode(t)
	const ns = "fro-rollout"
	w.namespace(t, ns)
	objs, err := renderChart(t, "forgejo-runner-operator", ns, map[string]any{
		"nodeSelector": map[string]any{"forgejo.brooktrails.org/test-node": "process"},
		"tolerations":  []any{map[string]any{"operator": "Exists"}},
		// Polls an hour apart: a job served within the test was brought by its webhook.
		"operator": map[string]any{"pollInterval": "1h"},
		"metrics":  map[string]any{"secure": false},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.apply(t, objs)

	k := &kubelet{w: w, namespace: ns, t: t, procs: map[types.UID]*podProcess{},
		selector:   client.MatchingLabels{"app.kubernetes.io/instance": "forgejo-runner-operator"},
		kubeconfig: w.kubeconfigFor(t, ns, "forgejo-runner-operator")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("operator logs:\n%s", k.logs())
		}
		k.stopAll()
	})

	deployKey := types.NamespacedName{Namespace: ns, Name: "forgejo-runner-operator"}
	rolledOut := func(what string) {
		eventually.True(t, 4*time.Minute, what, func() (bool, string) {
			var d appsv1.Deployment
			if err := w.cluster.Client.Get(t.Context(), deployKey, &d); err != nil {
				return false, err.Error()
			}
			s := d.Status
			var pods corev1.PodList
			_ = w.cluster.Client.List(t.Context(), &pods, client.InNamespace(ns), k.selector)
			msg := fmt.Sprintf("generation %d observed %d: %d replicas, %d updated, %d ready, %d available; %d pods",
				d.Generation, s.ObservedGeneration, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, len(pods.Items))
			return s.ObservedGeneration >= d.Generation && s.Replicas == 2 && s.UpdatedReplicas == 2 &&
				s.ReadyReplicas == 2 && s.AvailableReplicas == 2 && len(pods.Items) == 2, msg
		})
	}
	rolledOut("both replicas ready")

	pool := w.webhookPool(t)
	w.webhookToFollower(t, k, ns, pool, 1)

	// A rolling update, as `kubectl rollout restart` makes one.
	var d appsv1.Deployment
	if err := w.cluster.Client.Get(t.Context(), deployKey, &d); err != nil {
		t.Fatal(err)
	}
	base := d.DeepCopy()
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = time.Now().Format(time.RFC3339)
	if err := w.cluster.Client.Patch(t.Context(), &d, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	rolledOut("the rolling update to finish")
	var pods corev1.PodList
	if err := w.cluster.Client.List(t.Context(), &pods, client.InNamespace(ns), k.selector); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Annotations["kubectl.kubernetes.io/restartedAt"] == "" {
			t.Errorf("pod %s is of the old template", p.Name)
		}
	}
	w.webhookToFollower(t, k, ns, pool, 2)
}

const hookSecret = "rollout-hook-secret"

func (w *world) webhookPool(t *testing.T) *v1alpha1.RunnerPool {
	t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "forgejo", Namespace: "default"},
		StringData: map[string]string{"token": "admin-token", "secret": hookSecret},
	}
	if err := w.cluster.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "rollout", Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: w.url, Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef:   v1alpha1.SecretKeySelector{Name: secret.Name},
				WebhookSecretRef: &v1alpha1.SecretKeySelector{Name: secret.Name, Key: "secret"}},
			Labels: []string{"rollout:host"},
		},
	}
	if err := w.cluster.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// webhookToFollower queues a job and sends a push delivery for its repository to the replica
// that does not lead: with polls an hour apart, the job is served only if the delivery reached
// the leader.
func (w *world) webhookToFollower(t *testing.T, k *kubelet, ns string, pool *v1alpha1.RunnerPool, n int) {
	t.Helper()
	var leader, follower *podProcess
	eventually.True(t, 2*time.Minute, "a leader and a follower", func() (bool, string) {
		var lease coordinationv1.Lease
		if err := w.cluster.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "forgejo-runner-operator.forgejo.brooktrails.org"}, &lease); err != nil {
			return false, err.Error()
		}
		holder := ptrDeref(lease.Spec.HolderIdentity)
		addr, ok := webhookforward.AddressOf(holder)
		if !ok {
			return false, "holder " + holder
		}
		ip := strings.Split(addr, ":")[0]
		leader = k.byIP(ip)
		follower = nil
		k.mu.Lock()
		for _, p := range k.procs {
			if p.ip != ip && !p.exited() {
				follower = p
			}
		}
		k.mu.Unlock()
		return leader != nil && follower != nil, "holder " + holder
	})
	// The leader's first poll of the pool's connection has happened once its status says so.
	eventually.True(t, 2*time.Minute, "the pool reachable", func() (bool, string) {
		var got v1alpha1.RunnerPool
		if err := w.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &got); err != nil {
			return false, err.Error()
		}
		for _, c := range got.Status.Conditions {
			if c.Type == runnerpool.ConditionForgejoReachable {
				return c.Status == metav1.ConditionTrue, c.Reason
			}
		}
		return false, "no ForgejoReachable condition"
	})
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"rollout"}})
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Appendf(nil, `{"ref":"refs/heads/main","after":"%040d","repository":{"id":1,"full_name":"acme/app","owner":{"id":1,"login":"acme"}}}`, n)
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+follower.ip+":9000/webhook/forgejo", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forgejo-Delivery", fmt.Sprintf("rollout-%d", n))
	req.Header.Set("X-Forgejo-Event", "push")
	req.Header.Set("X-Forgejo-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("deliver to the follower %s: %v", follower.pod, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("the follower %s answered %d, want 202", follower.pod, resp.StatusCode)
	}
	eventually.True(t, time.Minute, "the job, cued by the follower's delivery, to be served", func() (bool, string) {
		got, _ := w.sim.Job(jobs[0].ID)
		return got.Status == forgejosim.JobSuccess, "job is " + string(got.Status)
	})
	// And the follower says it forwarded it: the leader's receiver took it (2xx).
	if n := forwarded(t, follower.ip); n != 1 {
		t.Errorf("the follower %s counts %v deliveries forwarded, want 1", follower.pod, n)
	}
}

// forwarded reads a replica's count of deliveries it forwarded to the leader.
func forwarded(t *testing.T, ip string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ip + ":8443/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", ip, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := webhookforward.MetricForwardsTotal + `{result="` + webhookforward.ResultForwarded + `"} `
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, want); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics of %s", want, ip)
	return 0
}

func ptrDeref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
