// Package cluster starts a simulated Kubernetes cluster made of real components built on this
// machine: etcd and kube-apiserver (through controller-runtime's envtest), plus
// kube-controller-manager, kube-scheduler and kwok, which plays the kubelet for fake nodes.
// Deployments and Jobs create pods, pods are scheduled onto the fake nodes and go Running, and a
// caller decides when a pod's containers end and with which exit code. The project's CRDs are
// installed. Tests, `make dev` and the benchmarks all stand on it.
package cluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	forgejov1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

//go:embed kwok.yaml
var kwokConfig []byte

// FakeNodeAnnotation marks the nodes kwok manages.
const FakeNodeAnnotation = "kwok.x-k8s.io/node"

// Options shape a simulated cluster. The zero value starts a full cluster with one fake node.
type Options struct {
	// APIServerOnly starts only etcd and kube-apiserver: enough for API and validation tests,
	// and a few seconds faster.
	APIServerOnly bool
	// Nodes is the number of fake nodes (default 1; ignored with APIServerOnly).
	Nodes int
	// Dir holds the kubeconfig, configuration and component logs. Empty makes a temporary
	// directory that Stop removes unless KeepDir is set.
	Dir string
	// KeepDir keeps Dir (with the logs) after Stop.
	KeepDir bool
	// BinDir holds kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok.
	// Empty uses KUBEBUILDER_ASSETS, or builds them with hack/build-test-binaries.sh.
	BinDir string
	// CRDDir holds the CRD manifests to install (default: the repository's config/crd/bases).
	CRDDir string
}

// Cluster is a running simulated cluster.
type Cluster struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a controller-runtime client with the core and project types registered.
	Client client.Client
	// Scheme has the core and project types registered.
	Scheme *runtime.Scheme
	// Kubeconfig is the path of a kubeconfig file for the administrator.
	Kubeconfig string
	// Dir holds the kubeconfig and the component logs.
	Dir string

	opts      Options
	env       *envtest.Environment
	processes []*process
	logFiles  []*os.File
}

// Start brings up a simulated cluster. On error, whatever was started is stopped again.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if opts.CRDDir == "" {
		opts.CRDDir = filepath.Join(root, "config", "crd", "bases")
	}
	if opts.BinDir == "" {
		opts.BinDir, err = binaryDir(ctx, root)
		if err != nil {
			return nil, err
		}
	}
	if opts.BinDir, err = filepath.Abs(opts.BinDir); err != nil {
		return nil, fmt.Errorf("resolve binary directory: %w", err)
	}
	if opts.Dir == "" {
		opts.Dir, err = os.MkdirTemp("", "simcluster-")
		if err != nil {
			return nil, fmt.Errorf("make cluster directory: %w", err)
		}
	} else if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("make cluster directory: %w", err)
	}

	c = &Cluster{Dir: opts.Dir, opts: opts}
	defer func() {
		if err != nil {
			c.opts.KeepDir = true // the logs explain the failure
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
			err = fmt.Errorf("%w (component logs in %s)", err, opts.Dir)
		}
	}()

	if err := c.startControlPlane(); err != nil {
		return c, err
	}
	if opts.APIServerOnly {
		return c, nil
	}
	if err := c.startNodeComponents(); err != nil {
		return c, err
	}
	if err := c.addFakeNodes(ctx, opts.Nodes); err != nil {
		return c, err
	}
	return c, c.waitForDefaultServiceAccount(ctx)
}

func (c *Cluster) startControlPlane() error {
	c.Scheme = runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(c.Scheme); err != nil {
		return fmt.Errorf("register core types: %w", err)
	}
	if err := forgejov1alpha1.AddToScheme(c.Scheme); err != nil {
		return fmt.Errorf("register project types: %w", err)
	}

	c.env = &envtest.Environment{
		Scheme:                c.Scheme,
		BinaryAssetsDirectory: c.opts.BinDir,
		CRDDirectoryPaths:     []string{c.opts.CRDDir},
		ErrorIfCRDPathMissing: true,
		// A busy two-core machine can take longer than envtest's 20 s default.
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	apiserverLog, err := c.logFile("kube-apiserver")
	if err != nil {
		return err
	}
	etcdLog, err := c.logFile("etcd")
	if err != nil {
		return err
	}
	c.env.ControlPlane.APIServer = &envtest.APIServer{Out: apiserverLog, Err: apiserverLog}
	c.env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}

	cfg, err := c.env.Start()
	if err != nil {
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	c.Config = cfg
	c.Client, err = client.New(cfg, client.Options{Scheme: c.Scheme})
	if err != nil {
		return fmt.Errorf("make client: %w", err)
	}

	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

func (c *Cluster) startNodeComponents() error {
	certDir := c.env.ControlPlane.APIServer.CertDir
	kwokConfigPath := filepath.Join(c.Dir, "kwok.yaml")
	if err := os.WriteFile(kwokConfigPath, kwokConfig, 0o644); err != nil {
		return fmt.Errorf("write kwok configuration: %w", err)
	}

	components := []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--service-account-private-key-file=" + filepath.Join(certDir, "sa-signer.key"),
			// The node-lifecycle controller would taint and evict kwok nodes whenever a busy
			// machine delays their status; the tests decide pod lifetimes themselves.
			"--controllers=*,-node-lifecycle-controller",
		}},
		{"kube-scheduler", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig,
			"--authorization-kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		}},
		{"kwok", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--config=" + kwokConfigPath,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + FakeNodeAnnotation + "=fake",
			"--cidr=10.0.0.1/16",
			"--node-ip=10.255.0.1",
		}},
	}
	for _, comp := range components {
		out, err := c.logFile(comp.name)
		if err != nil {
			return err
		}
		p, err := startProcess(filepath.Join(c.opts.BinDir, comp.name), comp.args, out)
		if err != nil {
			return fmt.Errorf("start %s: %w", comp.name, err)
		}
		c.processes = append(c.processes, p)
	}
	return nil
}

func (c *Cluster) addFakeNodes(ctx context.Context, n int) error {
	for i := range n {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        fmt.Sprintf("kwok-node-%d", i),
				Annotations: map[string]string{FakeNodeAnnotation: "fake"},
				Labels: map[string]string{
					"type":                   "kwok",
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
					"kubernetes.io/hostname": fmt.Sprintf("kwok-node-%d", i),
				},
			},
			Status: corev1.NodeStatus{
				Capacity:    fakeNodeResources(),
				Allocatable: fakeNodeResources(),
			},
		}
		if err := c.Client.Create(ctx, node); err != nil {
			return fmt.Errorf("create fake node %s: %w", node.Name, err)
		}
		// Create drops status, so capacity is set afterwards. kwok may already be writing the
		// node's status: a merge patch (no resourceVersion) cannot conflict with it.
		base := node.DeepCopy()
		node.Status.Capacity = fakeNodeResources()
		node.Status.Allocatable = fakeNodeResources()
		if err := c.Client.Status().Patch(ctx, node, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("set capacity of fake node %s: %w", node.Name, err)
		}
	}
	if err := c.poll(ctx, "fake nodes Ready", func() (bool, error) {
		var nodes corev1.NodeList
		if err := c.Client.List(ctx, &nodes); err != nil {
			return false, err
		}
		ready := 0
		for _, node := range nodes.Items {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= n, nil
	}); err != nil {
		return err
	}
	return c.untaintNodes(ctx)
}

// untaintNodes removes the not-ready taint that the API server's TaintNodesByCondition
// admission puts on every new node. Its usual remover, the node-lifecycle controller, is off
// here (see startNodeComponents), and kwok has made the nodes Ready.
func (c *Cluster) untaintNodes(ctx context.Context) error {
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes.Items {
		node := &nodes.Items[i]
		base := node.DeepCopy()
		kept := []corev1.Taint{}
		for _, taint := range node.Spec.Taints {
			if taint.Key != corev1.TaintNodeNotReady {
				kept = append(kept, taint)
			}
		}
		node.Spec.Taints = kept
		// A patch, not an update: kwok keeps writing node status meanwhile.
		if err := c.Client.Patch(ctx, node, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("remove not-ready taint from %s: %w", node.Name, err)
		}
	}
	return nil
}

func fakeNodeResources() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
}

// waitForDefaultServiceAccount waits until kube-controller-manager has made the default
// ServiceAccount: it is the sign that the controllers run.
func (c *Cluster) waitForDefaultServiceAccount(ctx context.Context) error {
	return c.poll(ctx, "kube-controller-manager to create the default ServiceAccount", func() (bool, error) {
		var sa corev1.ServiceAccount
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &sa)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return true, nil
	})
}

// poll calls cond every 100ms until it is true, it errs, the components die or ctx ends.
func (c *Cluster) poll(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		for _, p := range c.processes {
			if exited, err := p.exited(); exited {
				return fmt.Errorf("wait for %s: %s exited: %w", what, p.name, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-ticker.C:
		}
	}
}

// TerminatePod ends a pod the way a kubelet reports a finished pod: every container
// terminated with exitCode, and the pod Succeeded (exit code 0) or Failed (otherwise).
func (c *Cluster) TerminatePod(ctx context.Context, key client.ObjectKey, exitCode int32) error {
	// kwok may still be writing the pod's status; read again and retry on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var pod corev1.Pod
		if err := c.Client.Get(ctx, key, &pod); err != nil {
			return err
		}
		SetPodTerminated(&pod, exitCode, time.Now())
		return c.Client.Status().Update(ctx, &pod)
	})
	if err != nil {
		return fmt.Errorf("mark pod %s terminated: %w", key, err)
	}
	return nil
}

// SetPodTerminated rewrites a pod's status as ended: every container, sidecars included,
// terminated with exitCode; phase Succeeded for 0 and Failed otherwise.
func SetPodTerminated(pod *corev1.Pod, exitCode int32, at time.Time) {
	now := metav1.NewTime(at)
	terminated := func(name, image string) corev1.ContainerStatus {
		reason := "Completed"
		if exitCode != 0 {
			reason = "Error"
		}
		return corev1.ContainerStatus{
			Name:  name,
			Image: image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitCode, Reason: reason, StartedAt: now, FinishedAt: now,
			}},
		}
	}
	pod.Status.ContainerStatuses = nil
	for _, ctr := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, terminated(ctr.Name, ctr.Image))
	}
	pod.Status.InitContainerStatuses = nil
	for _, ctr := range pod.Spec.InitContainers {
		status := terminated(ctr.Name, ctr.Image)
		if ctr.RestartPolicy == nil || *ctr.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			status.State.Terminated.ExitCode = 0 // a plain init container had finished before
			status.State.Terminated.Reason = "Completed"
		}
		pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, status)
	}
	pod.Status.Phase = corev1.PodSucceeded
	if exitCode != 0 {
		pod.Status.Phase = corev1.PodFailed
	}
	for i := range pod.Status.Conditions {
		switch pod.Status.Conditions[i].Type {
		case corev1.PodReady, corev1.ContainersReady:
			pod.Status.Conditions[i].Status = corev1.ConditionFalse
			pod.Status.Conditions[i].Reason = "PodCompleted"
			pod.Status.Conditions[i].LastTransitionTime = now
		}
	}
}

// Stop stops every component, kube-controller-manager first and etcd last, and removes the
// cluster directory unless it is to be kept.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.processes) - 1; i >= 0; i-- {
		if err := c.processes[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	c.processes = nil
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop etcd and kube-apiserver: %w", err))
		}
		c.env = nil
	}
	for _, f := range c.logFiles {
		_ = f.Close()
	}
	c.logFiles = nil
	if !c.opts.KeepDir && c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// KeepLogs keeps the cluster directory and its component logs after Stop.
func (c *Cluster) KeepLogs() { c.opts.KeepDir = true }

func (c *Cluster) logFile(component string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("make log directory: %w", err)
	}
	f, err := os.Create(filepath.Join(c.Dir, "logs", component+".log"))
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", component, err)
	}
	c.logFiles = append(c.logFiles, f)
	return f, nil
}

// RepoRoot is the directory of the project's go.mod, found from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module git.brooktrails.org/brooktrails/forgejo-runner-operator\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod of forgejo-runner-operator above the working directory")
		}
		dir = parent
	}
}

// binaryDir finds the cluster binaries: KUBEBUILDER_ASSETS when set, else the cached build
// of hack/build-test-binaries.sh (which builds them the first time).
func binaryDir(ctx context.Context, root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-test-binaries.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build cluster binaries: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// process is a component the harness started itself.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(path string, args []string, out io.Writer) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	// Own process group, and killed with the test binary should it die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: filepath.Base(path), cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) error {
	if exited, _ := p.exited(); exited {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return fmt.Errorf("stop %s: still running after SIGKILL", p.name)
	}
}

// UserConfig returns a client configuration for a new user with these groups and no other
// rights than RBAC grants them: tests use it to run the operator with only its own role.
func (c *Cluster) UserConfig(name string, groups ...string) (*rest.Config, error) {
	user, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, c.Config)
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	return user.Config(), nil
}
