package cluster_test

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// One full cluster serves every test in this file: starting one costs seconds.
func TestSimulatedCluster(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{Nodes: 2})

	t.Run("CRDsInstalled", func(t *testing.T) {
		var pools metav1.PartialObjectMetadataList
		pools.SetGroupVersionKind(schemaKind("forgejo.brooktrails.org", "v1alpha1", "RunnerPoolList"))
		if err := c.Client.List(t.Context(), &pools); err != nil {
			t.Fatalf("list RunnerPools: %v", err)
		}
	})

	t.Run("DeploymentPodsRunOnFakeNodes", func(t *testing.T) {
		ns := namespace(t, c, "deploy")
		labels := map[string]string{"app": "web"}
		deploy := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "web", Image: "registry.example/web:1",
					}}},
				},
			},
		}
		if err := c.Client.Create(t.Context(), deploy); err != nil {
			t.Fatal(err)
		}
		eventually.True(t, time.Minute, "three Running pods on fake nodes", func() (bool, string) {
			pods := listPods(t, c, ns)
			running := 0
			for _, p := range pods {
				if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
					running++
				}
			}
			return running == 3, fmt.Sprintf("%d of %d pods running", running, len(pods))
		})
		eventually.True(t, time.Minute, "the Deployment to report three available replicas", func() (bool, string) {
			var got appsv1.Deployment
			if err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(deploy), &got); err != nil {
				return false, err.Error()
			}
			return got.Status.AvailableReplicas == 3, fmt.Sprintf("available=%d", got.Status.AvailableReplicas)
		})
	})

	t.Run("JobCompletesWhenItsPodSucceeds", func(t *testing.T) {
		ns := namespace(t, c, "job-ok")
		job := newJob(ns, "ok")
		if err := c.Client.Create(t.Context(), job); err != nil {
			t.Fatal(err)
		}
		pod := waitForRunningPod(t, c, ns)
		if err := c.TerminatePod(t.Context(), client.ObjectKeyFromObject(pod), 0); err != nil {
			t.Fatal(err)
		}
		waitForJobCondition(t, c, job, batchv1.JobComplete)
	})

	t.Run("JobFailsWhenItsPodExitsNonZero", func(t *testing.T) {
		ns := namespace(t, c, "job-fail")
		job := newJob(ns, "fail")
		if err := c.Client.Create(t.Context(), job); err != nil {
			t.Fatal(err)
		}
		pod := waitForRunningPod(t, c, ns)
		if err := c.TerminatePod(t.Context(), client.ObjectKeyFromObject(pod), 2); err != nil {
			t.Fatal(err)
		}
		waitForJobCondition(t, c, job, batchv1.JobFailed)
		var got corev1.Pod
		if err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), &got); err != nil {
			t.Fatal(err)
		}
		if code := got.Status.ContainerStatuses[0].State.Terminated.ExitCode; code != 2 {
			t.Fatalf("pod reports exit code %d, want 2", code)
		}
	})

	t.Run("DeletedPodsGoAway", func(t *testing.T) {
		ns := namespace(t, c, "delete")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "doomed", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		if err := c.Client.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		waitForRunningPod(t, c, ns)
		if err := c.Client.Delete(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		eventually.True(t, time.Minute, "the deleted pod to disappear", func() (bool, string) {
			pods := listPods(t, c, ns)
			return len(pods) == 0, fmt.Sprintf("%d pods left", len(pods))
		})
	})
}

func newJob(ns, name string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "work", Image: "registry.example/work:1"}},
			}},
		},
	}
}

func waitForRunningPod(t *testing.T, c *cluster.Cluster, ns string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually.True(t, time.Minute, "a Running pod in "+ns, func() (bool, string) {
		for _, p := range listPods(t, c, ns) {
			if p.Status.Phase == corev1.PodRunning {
				pod = &p
				return true, ""
			}
		}
		return false, "no running pod"
	})
	return pod
}

func waitForJobCondition(t *testing.T, c *cluster.Cluster, job *batchv1.Job, want batchv1.JobConditionType) {
	t.Helper()
	eventually.True(t, time.Minute, "Job condition "+string(want), func() (bool, string) {
		var got batchv1.Job
		if err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(job), &got); err != nil {
			return false, err.Error()
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == want && cond.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, fmt.Sprintf("conditions %v", got.Status.Conditions)
	})
}

func namespace(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

func listPods(t *testing.T, c *cluster.Cluster, ns string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := c.Client.List(t.Context(), &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func schemaKind(group, version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind}
}
