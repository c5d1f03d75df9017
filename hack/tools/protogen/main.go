// Command protogen compiles the project's .proto files and writes their Go code, doing in one
// process what protoc + protoc-gen-go would do.
//
// Neither protoc nor buf can be used here: the project's protos import runner/v1/messages.proto
// from Gitea's actions-proto-go, whose Go module carries only the compiled Go code, and buf would
// need the network (its schema registry) to fetch the source. The compiled Go code still embeds
// the full file descriptor, so this generator resolves that import from the linked-in Go package
// and feeds protocompile's result to protoc-gen-go's own generator (internal_gengo, importable
// despite its name).
//
// Files that declare services also get their gRPC code from protoc-gen-go-grpc, pinned as a tool
// of this module: its generator is a main package, not importable, so hack/generate-proto.sh builds
// it and this program speaks the plugin protocol to it (a CodeGeneratorRequest on stdin, the
// response on stdout), exactly as protoc would. It writes nothing for files without services, so
// their output does not depend on it.
//
// hack/generate-proto.sh runs it (with go run -C hack/tools/protogen) for every .proto under proto/.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// giteaGoImportPath is where the root module imports Gitea's runner.v1 package from; the
// descriptor's own go_package may name the module's older path.
const giteaGoImportPath = "gitea.dev/actions-proto-go/runner/v1"

func main() {
	protoPath := flag.String("proto_path", "proto", "directory the .proto files are relative to")
	out := flag.String("out", ".", "directory the Go files are written under (the module root)")
	module := flag.String("module", "", "Go module path stripped from output file names (protoc-gen-go's module= option)")
	grpcPlugin := flag.String("go-grpc-plugin", "", "protoc-gen-go-grpc executable; when empty, files declaring services are refused")
	flag.Parse()
	if flag.NArg() == 0 || *module == "" {
		fmt.Fprintln(os.Stderr, "usage: protogen -module M [-proto_path DIR] [-out DIR] FILE.proto...")
		os.Exit(2)
	}
	if err := generate(*protoPath, *out, *module, *grpcPlugin, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func generate(protoPath, outDir, module, grpcPlugin string, files []string) error {
	gitea := runnerv1.File_runner_v1_messages_proto
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(protocompile.CompositeResolver{
			&protocompile.SourceResolver{ImportPaths: []string{protoPath}},
			protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
				if path == gitea.Path() {
					return protocompile.SearchResult{Desc: gitea}, nil
				}
				return protocompile.SearchResult{}, fmt.Errorf("%s: %w", path, os.ErrNotExist)
			}),
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := compiler.Compile(context.Background(), files...)
	if err != nil {
		return fmt.Errorf("compile %v: %w", files, err)
	}

	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: files,
		Parameter:      proto.String("module=" + module + ",M" + gitea.Path() + "=" + giteaGoImportPath),
	}
	seen := map[string]bool{}
	for _, f := range compiled {
		addWithDependencies(req, f, seen)
	}

	plugin, err := protogen.Options{}.New(req)
	if err != nil {
		return fmt.Errorf("prepare generator: %w", err)
	}
	for _, f := range plugin.Files {
		if f.Generate {
			internal_gengo.GenerateFile(plugin, f)
		}
	}
	resp := plugin.Response()
	if resp.Error != nil {
		return errors.New(resp.GetError())
	}
	outFiles := resp.File
	if declaresServices(req) {
		if grpcPlugin == "" {
			return errors.New("a file declares a service but no -go-grpc-plugin was given")
		}
		grpcFiles, err := runPlugin(grpcPlugin, req)
		if err != nil {
			return err
		}
		outFiles = append(outFiles, grpcFiles...)
	}
	for _, f := range outFiles {
		path := filepath.Join(outDir, filepath.FromSlash(f.GetName()))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("create directory for %s: %w", path, err)
		}
		if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Println("wrote", path)
	}
	return nil
}

// addWithDependencies appends f after everything it imports, the order a CodeGeneratorRequest
// requires.
func addWithDependencies(req *pluginpb.CodeGeneratorRequest, f protoreflect.FileDescriptor, seen map[string]bool) {
	if seen[f.Path()] {
		return
	}
	seen[f.Path()] = true
	imports := f.Imports()
	for i := range imports.Len() {
		addWithDependencies(req, imports.Get(i).FileDescriptor, seen)
	}
	fdp := protodesc.ToFileDescriptorProto(f)
	req.ProtoFile = append(req.ProtoFile, fdp)
	// protoc-gen-go wants source positions only for the files it generates; keep the others lean.
	if !isToGenerate(req, f.Path()) {
		fdp.SourceCodeInfo = (*descriptorpb.SourceCodeInfo)(nil)
	}
}

func isToGenerate(req *pluginpb.CodeGeneratorRequest, path string) bool {
	for _, g := range req.FileToGenerate {
		if g == path {
			return true
		}
	}
	return false
}

// declaresServices tells whether a file to generate declares a service.
func declaresServices(req *pluginpb.CodeGeneratorRequest) bool {
	for _, f := range req.ProtoFile {
		if isToGenerate(req, f.GetName()) && len(f.GetService()) > 0 {
			return true
		}
	}
	return false
}

// runPlugin runs a protoc plugin executable on req and returns the files it made.
func runPlugin(path string, req *pluginpb.CodeGeneratorRequest) ([]*pluginpb.CodeGeneratorResponse_File, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request for %s: %w", path, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s: %w: %s", path, err, stderr.String())
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("decode response of %s: %w", path, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %s", path, resp.GetError())
	}
	return resp.File, nil
}
