#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/ into internal/runnerpb/ and
# internal/provisionerpb/ (the path comes from each file's go_package), with gRPC service code for
# the files that declare services. The generator and protoc-gen-go-grpc are pinned in
# hack/tools/protogen/go.mod and built through the Go module proxy; no protoc or buf binary is
# needed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$(cd "$root" && go list -m)"

cd "$root/proto"
mapfile -t files < <(find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
if [ "${#files[@]}" -eq 0 ]; then
	echo "generate-proto: no .proto files under proto/" >&2
	exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -C "$root/hack/tools/protogen" -o "$tmp/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

go run -C "$root/hack/tools/protogen" . -go-grpc-plugin "$tmp/protoc-gen-go-grpc" \
	-proto_path "$root/proto" -out "$root" -module "$module" "${files[@]}"
