#!/usr/bin/env bash
# Installs what the provisioner's QEMU tests boot a guest with (internal/provisioner/driver/qemu):
# QEMU, qemu-img and a Debian kernel with its modules (the cloud flavour: small, made for VMs).
# Idempotent and quick when they are there; `make test-binaries` (so `make test` and .ci/run)
# runs it. Installing needs root and Debian's apt; otherwise it says what to install and fails,
# because the tests fail (never skip) without them.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
kernel=
for k in /boot/vmlinuz-*; do
  [ -e "$k" ] || continue
  [ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && kernel=$k && break
done
[ -n "$kernel" ] || need+=(linux-image-cloud-amd64)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-vm-tools: QEMU, qemu-img and kernel $kernel present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-vm-tools: missing ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
  exit 1
fi
echo "install-vm-tools: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
echo "install-vm-tools: installed ${need[*]}" >&2
