package main

// What the operator may do in the cluster; `make generate` turns these markers into
// config/rbac/role.yaml. The leader election Lease is not here: its rights are a Role in the
// operator's own namespace (config/leader-election), not cluster-wide. config/namespaced grants
// the same rules as Roles in one namespace; test/security checks that they cover these.
//
// +kubebuilder:rbac:groups=forgejo.brooktrails.org,resources=runnerpools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=forgejo.brooktrails.org,resources=runners,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=forgejo.brooktrails.org,resources=runnerpools/status;runners/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=forgejo.brooktrails.org,resources=runnerpools/finalizers;runners/finalizers,verbs=update
// Pods and Secrets: only the runners' own are cached (a label-filtered watch), created and
// deleted; pools' token Secrets are only read. Each pool's copy of its token for deregistration
// (package tokenkeep) is created, patched when the token rotates or to drop its finalizer, and
// deleted.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;delete;patch
// Namespaces: read one at a time, for pools that ask for Privileged DinD, to see whether the
// cluster admin allowed it there.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
