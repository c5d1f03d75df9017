package runnerpod

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

const egressSample = "../../config/samples/runner-egress-networkpolicy.yaml"

func loadEgressSample(t *testing.T) *networkingv1.NetworkPolicy {
	t.Helper()
	data, err := os.ReadFile(filepath.FromSlash(egressSample))
	if err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(data, &np); err != nil {
		t.Fatalf("parse %s: %v", egressSample, err)
	}
	return &np
}

// The shipped NetworkPolicy selects the pods this package builds, in every DinD mode and with
// the pool's own labels added; a renamed label would leave runner pods unprotected.
func TestEgressSampleSelectsRunnerPods(t *testing.T) {
	np := loadEgressSample(t)
	selector, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if selector.Empty() {
		t.Fatal("the sample selects every pod of the namespace, not the runner pods")
	}
	for _, p := range []*v1alpha1.RunnerPool{pool(), pool(withDinD(v1alpha1.DinDRootless)), pool(withDinD(v1alpha1.DinDPrivileged)), fullPool()} {
		pod := mustBuildPod(t, p, runner())
		if !selector.Matches(labels.Set(pod.Labels)) {
			t.Errorf("the sample's podSelector %s does not select a runner pod labelled %v", selector, pod.Labels)
		}
	}
	if selector.Matches(labels.Set{"app.kubernetes.io/name": "forgejo"}) {
		t.Error("the sample selects pods other than runner pods")
	}
}

// What the sample allows: DNS and the internet; what it keeps out: the metadata address, the
// private ranges pods and services live in, and any ingress.
func TestEgressSampleAllowsTheInternetButNotTheCluster(t *testing.T) {
	np := loadEgressSample(t)
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatalf("policyTypes %v: the sample must restrict both directions", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 0 {
		t.Errorf("ingress rules %+v: nothing should reach a runner pod", np.Spec.Ingress)
	}
	allowed := func(addr string) bool {
		a := netip.MustParseAddr(addr)
		for _, rule := range np.Spec.Egress {
			for _, peer := range rule.To {
				if peer.IPBlock == nil || !netip.MustParsePrefix(peer.IPBlock.CIDR).Contains(a) {
					continue
				}
				if !slices.ContainsFunc(peer.IPBlock.Except, func(e string) bool { return netip.MustParsePrefix(e).Contains(a) }) {
					return true
				}
			}
		}
		return false
	}
	for _, addr := range []string{"1.1.1.1", "140.82.112.3", "2606:4700:4700::1111"} {
		if !allowed(addr) {
			t.Errorf("the internet address %s is not reachable", addr)
		}
	}
	for _, addr := range []string{"169.254.169.254", "fd00:ec2::254", "10.96.0.1", "10.244.1.7", "172.20.0.10", "192.168.1.1", "100.64.0.1", "127.0.0.1"} {
		if allowed(addr) {
			t.Errorf("%s (metadata, pod, service or node range) is reachable", addr)
		}
	}
	dns := slices.ContainsFunc(np.Spec.Egress, func(rule networkingv1.NetworkPolicyEgressRule) bool {
		return slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool {
			return p.Port != nil && p.Port.IntValue() == 53 && p.Protocol != nil && *p.Protocol == corev1.ProtocolUDP
		})
	})
	if !dns {
		t.Error("no rule lets runner pods resolve names (UDP 53)")
	}
}
