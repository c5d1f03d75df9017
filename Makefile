# forgejo-runner-operator. The two commands a user needs: `make dev` and `make test`.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
BIN := $(CURDIR)/bin
MODULE := git.brooktrails.org/brooktrails/forgejo-runner-operator
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X $(MODULE)/internal/version.Version=$(VERSION) -X $(MODULE)/internal/version.Commit=$(COMMIT)
CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint
BUF := $(BIN)/buf
GO_TEST_FLAGS ?= -race -count=1 -timeout=30m

.PHONY: all
all: build

##@ Development

.PHONY: dev
dev: ## Start a simulated cluster, the Forgejo simulator and the operator with sample pools.
	$(GO) run -ldflags "$(LDFLAGS)" ./hack/dev

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy code, CRDs and RBAC from the Go types.
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd rbac:roleName=manager-role paths=./... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@if [ -x hack/generate-proto.sh ]; then hack/generate-proto.sh; fi
	$(MAKE) --no-print-directory chart-files

CHART := charts/forgejo-runner-operator
.PHONY: chart-files
chart-files: ## Copy into the Helm chart what it shares with config/ (test/install fails when they differ).
	cp config/crd/bases/*.yaml $(CHART)/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/namespaced/role.yaml $(CHART)/files/namespaced-role.yaml
	cp config/prometheus/alerts.yaml $(CHART)/files/alerts.yaml
	cp config/grafana/forgejo-runner-operator.json $(CHART)/files/dashboard.json
	cp config/policy/runnerpool-escalation-policy.yaml config/policy/runnerpool-escalation-binding.yaml $(CHART)/files/
	cp config/samples/runner-egress-networkpolicy.yaml $(CHART)/files/

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

##@ Checks

.PHONY: test
test: verify lint test-binaries ## Everything CI runs: generated files, lint, and every test.
	KUBEBUILDER_ASSETS="$$(hack/build-test-binaries.sh)" $(GO) test $(GO_TEST_FLAGS) ./...
	@# The image tests build without the race detector (see hack/images/images_test.go).
	$(GO) test -count=1 -timeout=30m ./hack/images/
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

FUZZTIME ?= 1m
.PHONY: fuzz
fuzz: ## Fuzz the webhook verifier and parser, and the Forgejo response parsers, for FUZZTIME each.
	$(GO) test -run='^$$' -fuzz='^FuzzHandler$$' -fuzztime=$(FUZZTIME) ./internal/webhook
	$(GO) test -run='^$$' -fuzz='^FuzzParseResponse$$' -fuzztime=$(FUZZTIME) ./internal/forgejo

.PHONY: test-binaries
test-binaries: ## Build (once) the Kubernetes binaries the tests run; install QEMU and a kernel for the VM tests.
	hack/build-test-binaries.sh
	hack/install-vm-tools.sh

.PHONY: verify
verify: ## Fail when generated files are stale, code is unformatted or go.mod is untidy.
	hack/verify.sh

.PHONY: lint
lint: $(GOLANGCI_LINT) proto-lint ## Run golangci-lint, and buf on the provisioner's API (proto-lint).
	$(GOLANGCI_LINT) run ./...

# buf.yaml says what buf checks (proto/provisioner only) and why; hack/install-buf downloads the
# pinned buf from the npm registry and checks its sha512 (quick when bin/buf is that version).
.PHONY: proto-lint
proto-lint: ## Lint the provisioner's API and check it for breaking changes against its baseline (buf).
	$(GO) run ./hack/install-buf -bin $(BIN) >/dev/null
	$(BUF) lint
	$(BUF) breaking --against proto/provisioner/v1/baseline.txtpb

.PHONY: proto-baseline
proto-baseline: ## After a deliberate change to the provisioner's API, make it the baseline proto-lint checks against.
	$(GO) run ./hack/install-buf -bin $(BIN) >/dev/null
	$(BUF) build --exclude-source-info -o proto/provisioner/v1/baseline.txtpb

##@ Benchmarks

.PHONY: bench
bench: ## Time a burst of jobs through the operator and print figures (flags: BENCH_ARGS="-jobs 20 -poll 1s -json").
	KUBEBUILDER_ASSETS="$$(hack/build-test-binaries.sh)" $(GO) run ./hack/bench $(BENCH_ARGS)

VMS ?= 4
.PHONY: bench-vm
bench-vm: ## Boot VMS real VMs under QEMU one after another, then all at once, and print boot-time p50/p95.
	hack/install-vm-tools.sh
	$(GO) test -run '^$$' -bench '^BenchmarkBoot$$' -benchtime $(VMS)x -timeout 60m ./internal/provisioner/driver/qemu

##@ Build

.PHONY: build
build: ## Build the operator binary into bin/.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/forgejo-runner-operator ./cmd/forgejo-runner-operator

# Images are assembled without a container engine by hack/images (docs/images.md): one per
# binary under cmd/, so the provisioner gets its image once cmd/forgejo-runner-provisioner exists.
IMAGE_BINARIES ?= $(notdir $(wildcard cmd/forgejo-runner-*))
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_REPO ?=
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: images
images: ## Build the images (linux/amd64, linux/arm64) as OCI layouts and tarballs in bin/images/, no engine needed.
	$(GO) run ./hack/images build -binaries "$(IMAGE_BINARIES)" -platforms "$(IMAGE_PLATFORMS)" \
		-version "$(VERSION)" -commit "$(COMMIT)" -source-date-epoch "$(SOURCE_DATE_EPOCH)" -out $(BIN)/images

.PHONY: release-version
release-version: ## Before tagging a release: make release-version VERSION=v1.2.3 sets the chart's appVersion to it.
	@echo "$(VERSION)" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$' || { echo "release-version: VERSION must be vMAJOR.MINOR.PATCH, got $(VERSION)" >&2; exit 1; }
	sed -i 's/^appVersion: .*/appVersion: "$(VERSION)"/' $(CHART)/Chart.yaml

.PHONY: push
push: images ## Push the images and their SBOMs: make push IMAGE_REPO=registry.example.com/brooktrails.
	@[ -n "$(IMAGE_REPO)" ] || { echo "push: set IMAGE_REPO, e.g. make push IMAGE_REPO=registry.example.com/brooktrails" >&2; exit 1; }
	$(GO) run ./hack/images push -repo "$(IMAGE_REPO)" -binaries "$(IMAGE_BINARIES)" -out $(BIN)/images

.PHONY: install
install: ## Install the CRDs into the cluster kubectl points at.
	kubectl apply --server-side -f config/crd/bases

# Tools are pinned in their own modules under hack/tools and built from the module proxy.
$(CONTROLLER_GEN): hack/tools/controller-gen/go.mod hack/tools/controller-gen/go.sum
	$(GO) -C hack/tools/controller-gen build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): hack/tools/golangci-lint/go.mod hack/tools/golangci-lint/go.sum
	$(GO) -C hack/tools/golangci-lint build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2} /^##@/ {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)
