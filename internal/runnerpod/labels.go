package runnerpod

import (
	"maps"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// Label keys and values the operator sets on every runner pod and Secret. A pool's
// podTemplate.labels may add labels but never replace these: the reconciler and
// `kubectl get pods -l pool=NAME` rely on them.
const (
	// LabelPool carries the name of the runner's RunnerPool (through [LabelValue]).
	LabelPool = v1alpha1.PoolLabel
	// LabelRunner carries the name of the Runner that owns the object (through [LabelValue]).
	LabelRunner = "forgejo.brooktrails.org/runner"
	// LabelAppName is the well-known application label.
	LabelAppName = "app.kubernetes.io/name"
	// LabelManagedBy is the well-known label naming the controller that manages the object.
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// AppName is the value of [LabelAppName].
	AppName = "forgejo-runner"
	// ManagedBy is the value of [LabelManagedBy].
	ManagedBy = "forgejo-runner-operator"
)

// AnnotationPodSpecHash holds a hash of everything BuildPod put into the pod except the
// annotation itself. Comparing it with the hash of a fresh build tells the reconciler whether the
// pool changed in a way that matters to this pod, without diffing against server-side defaults.
const AnnotationPodSpecHash = "forgejo.brooktrails.org/pod-spec-hash"

// Labels are the operator's labels for the children of runner in pool.
func Labels(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) map[string]string {
	return map[string]string{
		LabelPool:      LabelValue(pool.Name),
		LabelRunner:    LabelValue(runner.Name),
		LabelAppName:   AppName,
		LabelManagedBy: ManagedBy,
	}
}

// podLabels lays the operator's labels over the user's so that user labels can add but not
// override.
func podLabels(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) map[string]string {
	labels := map[string]string{}
	if tpl := pool.Spec.Runner.PodTemplate; tpl != nil {
		maps.Copy(labels, tpl.Labels)
	}
	maps.Copy(labels, Labels(pool, runner))
	return labels
}
