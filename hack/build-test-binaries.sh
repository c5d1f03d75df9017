#!/usr/bin/env bash
# Builds the binaries of the simulated cluster from the Go module proxy (DESIGN.md §6):
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok.
#
# Output: bin/k8s/<key>/, where <key> hashes the pinning modules (go.mod and go.sum of
# hack/kube, hack/etcd, hack/kwok), so a second run with the same pins costs nothing and a
# pin change builds anew. Prints the directory, which is what KUBEBUILDER_ASSETS wants.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' hack/kube/go.mod)
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' hack/etcd/go.mod)
kwok_version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/kwok" {print $3}' hack/kwok/go.mod)
key=$(cat hack/kube/go.mod hack/kube/go.sum hack/etcd/go.mod hack/etcd/go.sum hack/kwok/go.mod hack/kwok/go.sum \
  | sha256sum | cut -c1-12)
out="$root/bin/k8s/${kube_version}-${key}"

log() { echo "build-test-binaries: $*" >&2; }

build() { # build <name> <module dir> <package> <ldflags>
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  if [ -x "$out/$name" ]; then
    return
  fi
  log "building $name from $pkg (first time only; this takes minutes)"
  local start=$SECONDS
  go -C "$dir" build -trimpath -ldflags "-s -w $ldflags" -o "$out/$name.tmp" "$pkg"
  mv "$out/$name.tmp" "$out/$name"
  log "built $name in $((SECONDS - start))s"
}

mkdir -p "$out"
kube_ldflags="-X k8s.io/component-base/version.gitVersion=${kube_version}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "${kube_version#v}" | cut -d. -f1)"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "${kube_version#v}" | cut -d. -f2)"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
build kube-apiserver hack/kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager hack/kube k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build kube-scheduler hack/kube k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
build etcd hack/etcd go.etcd.io/etcd/server/v3 "-X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}"
build kwok hack/kwok sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube_version#v}"

echo "$out"
