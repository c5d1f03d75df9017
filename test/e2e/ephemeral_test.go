// Package e2e runs the operator, in-process and wired exactly as the binary wires it, against a
// simulated cluster and the Forgejo simulator, with simulated runner processes in the pods.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/runnerplay"
)

type world struct {
	cluster *cluster.Cluster
	sim     *forgejosim.Server
	url     string
	// operatorConfig reaches the API server as a user with only the operator's ClusterRole.
	operatorConfig *rest.Config
	// stopOperator stops the running operator and waits until it has stopped.
	stopOperator func()
	// logs holds everything the operator logged.
	logs *lockedBuffer
}

// lockedBuffer is a bytes.Buffer safe for the operator's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// operatorIdentity makes a user bound to nothing but config/rbac/role.yaml, so the tests prove
// that the role the operator ships with is enough.
func operatorIdentity(t *testing.T, c *cluster.Cluster) *rest.Config {
	t.Helper()
	role := cluster.ManagerRole(t)
	if err := c.Client.Create(t.Context(), &role); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	const user = "forgejo-runner-operator"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "forgejo-runner-operator-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	if err := c.Client.Create(t.Context(), binding); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	cfg, err := c.UserConfig(user)
	if err != nil {
		t.Fatal(err)
	}
	// The identity really is restricted: what the role does not grant is refused.
	restricted, err := client.New(cfg, client.Options{Scheme: c.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := restricted.List(t.Context(), &corev1.NamespaceList{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the operator's identity may list namespaces (%v): it is not restricted to its role", err)
	}
	return cfg
}

// taskDuration is how long each simulated job runs.
var taskDuration = 20 * time.Millisecond

// Options of the operator under test: fast enough that a test takes seconds.
var testOptions = operator.Options{
	PollInterval: 200 * time.Millisecond,
	Resync:       2 * time.Second,
	JobGoneGrace: 3 * time.Second,
	GCInterval:   time.Second,
}

// testSimOptions are the Forgejo simulator's options beyond its admin token and seed: by
// default it is Forgejo v15.0.3.
var testSimOptions forgejosim.Options

// metricsAddr is where the operator under test serves /metrics (plain HTTP); "0" serves none.
var metricsAddr = "0"

func startWorld(t *testing.T) *world {
	t.Helper()
	w := &world{cluster: cluster.StartForTest(t, cluster.Options{}), logs: &lockedBuffer{}}
	simOpts := testSimOptions
	simOpts.AdminToken, simOpts.Seed = "admin-token", 7
	w.sim, w.url = forgejosim.NewTestServer(t, simOpts)
	logOutput.set(io.MultiWriter(testWriter{t}, w.logs))
	t.Cleanup(func() { logOutput.set(io.Discard) })

	ctx, cancel := context.WithCancel(context.Background())
	player := &runnerplay.Player{Cluster: w.cluster, TaskDuration: taskDuration, Logf: t.Logf}
	playerDone := make(chan struct{})
	go func() {
		defer close(playerDone)
		player.Run(ctx)
	}()
	w.operatorConfig = operatorIdentity(t, w.cluster)
	w.startOperator(t)
	t.Cleanup(func() {
		w.stopOperator()
		cancel()
		<-playerDone
	})
	return w
}

// startOperator runs the operator in-process, wired as the binary wires it.
func (w *world) startOperator(t *testing.T) {
	t.Helper()
	mgr, err := ctrl.NewManager(w.operatorConfig, ctrl.Options{
		Scheme:                 w.cluster.Scheme,
		Cache:                  operator.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: "0",
		// A restarted operator registers its controllers again in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := operator.Setup(mgr, testOptions); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	w.stopOperator = func() {
		cancel()
		<-done
	}
}

// logOutput is where the operator's logs go: controller-runtime takes its logger once per
// process, so each test points this writer at its own output instead.
var logOutput = func() *switchWriter {
	w := &switchWriter{out: io.Discard}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(w)))
	return w
}()

type switchWriter struct {
	mu  sync.Mutex
	out io.Writer
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = w
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (w *world) createPool(t *testing.T, name string, mutate func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: "default"},
		StringData: map[string]string{"token": "admin-token"},
	}
	if err := w.cluster.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{
				URL: w.url, Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name},
			},
			Labels: []string{"docker:host"},
		},
	}
	if mutate != nil {
		mutate(pool)
	}
	if err := w.cluster.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestEveryJobGetsItsOwnRunnerAndNothingIsLeft is the product's promise end to end: twenty
// waiting jobs get twenty runners, each runs its own job once, and afterwards nothing is left
// in Forgejo or the cluster but the pool's history.
func TestEveryJobGetsItsOwnRunnerAndNothingIsLeft(t *testing.T) {
	w := startWorld(t)
	const jobs = 20
	pool := w.createPool(t, "burst", func(p *v1alpha1.RunnerPool) {
		p.Spec.Scaling.MaxRunners = 25
		p.Spec.History.Limit = ptr.To[int32](15)
	})
	queued, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: jobs})
	if err != nil {
		t.Fatal(err)
	}
	// A job whose labels the pool lacks must get no runner.
	foreign, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"windows"}})
	if err != nil {
		t.Fatal(err)
	}

	eventually.True(t, 3*time.Minute, "every job to succeed", w.allSucceeded(queued))
	eventually.True(t, time.Minute, "nothing left behind", func() (bool, string) {
		state := w.sim.State()
		var runners v1alpha1.RunnerList
		var pods corev1.PodList
		var secrets corev1.SecretList
		_ = w.cluster.Client.List(t.Context(), &runners, client.InNamespace("default"))
		_ = w.cluster.Client.List(t.Context(), &pods, client.InNamespace("default"), client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName})
		_ = w.cluster.Client.List(t.Context(), &secrets, client.InNamespace("default"), client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName})
		left := fmt.Sprintf("%d registrations, %d Runners, %d pods, %d token Secrets", len(state.Runners), len(runners.Items), len(pods.Items), len(secrets.Items))
		return len(state.Runners) == 0 && len(runners.Items) == 0 && len(pods.Items) == 0 && len(secrets.Items) == 0, left
	})

	tasksPerJob := map[int64]int{}
	for _, task := range w.sim.State().Tasks {
		tasksPerJob[task.JobID]++
	}
	for _, j := range queued {
		if tasksPerJob[j.ID] != 1 {
			t.Errorf("job %d ran %d times, want once", j.ID, tasksPerJob[j.ID])
		}
	}
	if got, _ := w.sim.Job(foreign[0].ID); got.Status != forgejosim.JobWaiting || tasksPerJob[foreign[0].ID] != 0 {
		t.Errorf("the job no pool matches was touched: %+v", got)
	}

	// The simulator numbers registrations in order: one more shows how many were ever made.
	if made := w.registrationsMade(t); made != jobs {
		t.Errorf("%d registrations were made for %d jobs, want one each", made, jobs)
	}

	var got v1alpha1.RunnerPool
	if err := w.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &got); err != nil {
		t.Fatal(err)
	}
	if n := len(got.Status.RecentRunners); n != 15 {
		t.Errorf("history has %d entries, want the limit of 15", n)
	}
	for _, rec := range got.Status.RecentRunners {
		if rec.Outcome != v1alpha1.OutcomeSucceeded || rec.JobID == 0 || rec.Handle == "" || rec.FinishedAt == nil {
			t.Errorf("history entry incomplete: %+v", rec)
		}
	}
}
