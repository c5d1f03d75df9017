// Generates the project's protobuf Go code without protoc or buf: Gitea's runner.v1 messages, which
// the project's proto imports, ship only as compiled Go (no .proto files) in actions-proto-go, so
// their descriptors are taken from that Go package instead of from source.
module git.brooktrails.org/brooktrails/forgejo-runner-operator/hack/tools/protogen

go 1.26.0

require (
	gitea.dev/actions-proto-go v0.6.0
	github.com/bufbuild/protocompile v0.14.1
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/sync v0.8.0 // indirect
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
)

// Same as the root module: v0.6.0 declares gitea.dev/actions-proto-go but is served under its old path.
replace gitea.dev/actions-proto-go => code.gitea.io/actions-proto-go v0.6.0

tool google.golang.org/grpc/cmd/protoc-gen-go-grpc
