// Package v1alpha1 holds the RunnerPool and Runner API of the forgejo.brooktrails.org group.
// +kubebuilder:object:generate=true
// +groupName=forgejo.brooktrails.org
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of the types in this package.
	GroupVersion = schema.GroupVersion{Group: "forgejo.brooktrails.org", Version: "v1alpha1"}

	// SchemeBuilder registers the types in this package with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types in this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion, &RunnerPool{}, &RunnerPoolList{}, &Runner{}, &RunnerList{})
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
