# OSM developer entry points. Every target works on a fresh machine with Go;
# see README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Modules of the workspace (go.work). A go.work root has no module of its
# own, so targets loop over these.
MODULES = $(shell go list -m -f '{{.Dir}}')
# Services that must also build on their own (GOWORK=off), as the
# per-component images and canary upgrades need.
SERVICES = $(wildcard services/*)
GOTEST_FLAGS ?= -race -count=1 -timeout 30m
# Modules kept out of go.work so that their dependencies do not shift the
# workspace's versions: the test servers' builds, the chart tests and the
# osm CLI (Helm: in go.work it moves golang.org/x/net and gnostic-models
# under every service).
OFFWORK_MODULES = tests/kubebox tests/vaultbox tests/chart cli/osm
# The osm CLI's embedded copy of the chart, packed by osm-chart.
OSM_CHART = cli/osm/internal/chart/osm.tgz
# The NATS users of the Helm chart, generated from libs/bus/roles.go.
NATS_ROLES = deploy/charts/osm/charts/nats/files/roles.json
# The tag make images gives the images by default: the chart's appVersion,
# the tag its default values pull (global.image.tag empty), so that make
# images, make push and helm install agree. TAG=… overrides it.
CHART_APP_VERSION = $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' deploy/charts/osm/Chart.yaml)

.PHONY: help build osm test vet fmt lint proto proto-check nats-roles nats-roles-check osm-chart osm-chart-check testbins fuzz run soak scale images push clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build every module, and each service on its own with GOWORK=off
	@for m in $(MODULES); do echo "build $$m"; (cd $$m && go build ./...); done
	@for s in $(SERVICES); do echo "build $$s (GOWORK=off)"; (cd $$s && GOWORK=off go build ./...); done
	@echo "build cli/osm (GOWORK=off)"; cd cli/osm && GOWORK=off go build ./...

osm: ## build the osm CLI (cli/osm, chart embedded) into .bin/osm
	@cd cli/osm && GOWORK=off go build -o $(CURDIR)/.bin/osm .

fmt: ## gofmt every Go file
	@gofmt -l -w $$(git ls-files '*.go')

vet: ## gofmt check and go vet in every module
	@unformatted=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@for m in $(MODULES); do echo "vet $$m"; (cd $$m && go vet ./...); done
	@for m in $(OFFWORK_MODULES); do echo "vet $$m (GOWORK=off)"; (cd $$m && GOWORK=off go vet ./...); done
	@echo "vet scripts/tools (GOWORK=off)"; cd scripts/tools && GOWORK=off go vet ./...

lint: vet ## vet plus buf lint of the protobuf contract
	@scripts/proto.sh lint

proto: ## regenerate the Go code of proto/ with the pinned buf
	@scripts/proto.sh gen

proto-check: ## fail when the generated code is stale or the contract breaks compatibility with the previous commit
	@scripts/proto.sh check

nats-roles: ## regenerate the Helm chart's NATS users and permissions from libs/bus/roles.go
	@cd libs && go run ./bus/cmd/nats-roles -o $(CURDIR)/$(NATS_ROLES)

nats-roles-check: ## fail when the chart's NATS users are stale against libs/bus/roles.go
	@cd libs && go run ./bus/cmd/nats-roles -o $(CURDIR)/$(NATS_ROLES) -check

osm-chart: ## pack deploy/charts/osm into the osm CLI's embedded copy (cli/osm/internal/chart/osm.tgz)
	@cd cli/osm/internal/chart && GOWORK=off go run ./pack -src $(CURDIR)/deploy/charts/osm -o $(CURDIR)/$(OSM_CHART)

osm-chart-check: ## fail when the osm CLI's embedded chart is stale against deploy/charts/osm
	@cd cli/osm/internal/chart && GOWORK=off go run ./pack -src $(CURDIR)/deploy/charts/osm -o $(CURDIR)/$(OSM_CHART) -check

testbins: ## build (once, cached) the real servers the tests run: kube-apiserver with controllers, Vault dev server
	@scripts/build-testbins.sh

test: proto-check nats-roles-check osm-chart-check vet build testbins ## everything CI runs: contract checks, vet, builds, all tests against real servers, fuzzing
	@for m in $(MODULES); do echo "test $$m"; (cd $$m && go test $(GOTEST_FLAGS) ./...); done
	@echo "test scripts/tools (GOWORK=off)"; cd scripts/tools && GOWORK=off go test $(GOTEST_FLAGS) ./...
	@echo "test tests/chart (GOWORK=off)"; cd tests/chart && GOWORK=off go test $(GOTEST_FLAGS) ./...
	@echo "test cli/osm (GOWORK=off)"; cd cli/osm && GOWORK=off go test $(GOTEST_FLAGS) ./...
	@$(MAKE) --no-print-directory fuzz

FUZZTIME ?= 60s
fuzz: ## run the fuzz targets for FUZZTIME each (60s by default); the seed corpora live in testdata/fuzz
	@echo "fuzz injector-webhook FuzzAdmit for $(FUZZTIME)"
	@cd services/injector-webhook && go test -run '^$$' -fuzz '^FuzzAdmit$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/webhook/
	@echo "fuzz libs/bus FuzzKeyRoundTrip for $(FUZZTIME)"
	@cd libs && go test -run '^$$' -fuzz '^FuzzKeyRoundTrip$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./bus/

# run builds osm-dev and runs it, not go run: go run exits 1 when Ctrl-C
# reaches it, and make reported an error for a clean stop.
run: ## start the local dev stack on embedded defaults (Ctrl-C stops it)
	@cd tests && go build -o $(CURDIR)/.bin/osm-dev ./cmd/osm-dev
	@$(CURDIR)/.bin/osm-dev --dir $(CURDIR)/.osm-dev $(ARGS)

soak: ## the 10-minute "day in the life" soak: 1,000 proxies, 2 edges, 2-minute certificates, a root rotation, kill -9 of the compiler and an edge, a NATS restart; prints its table (docs/soak.md); the kube-apiserver harness is built on first use, as by testbins
	@cd tests && go run ./soak/cmd/soak $(ARGS)

scale: ## the whole pipeline at scale: 10k Services, 50k pods, 10k proxies; p50/p99/max from each edit's apply to the last proxy's ACK, per stage, with CPU and peak RSS per process (docs/bench/README.md); ARGS='--help' lists the flags
	@cd tests && go run ./scale/cmd/scale $(ARGS)

images: ## build one OCI image per service, without Docker, into .bin/images/<service> (docs/images.md), tagged with the chart's appVersion; TAG=… sets another tag, PLATFORMS=linux/amd64,linux/arm64 adds arm64
	@if [ -z '$(or $(TAG),$(CHART_APP_VERSION))' ]; then echo "make images: no appVersion in deploy/charts/osm/Chart.yaml; set TAG=…" >&2; exit 2; fi
	@cd scripts/tools && GOWORK=off go run ./cmd/images build --repo $(CURDIR) --out $(CURDIR)/.bin/images --tag '$(or $(TAG),$(CHART_APP_VERSION))' $(if $(PLATFORMS),--platforms '$(PLATFORMS)')

push: ## push the images of make images to REGISTRY/osm-<service>:TAG: make push REGISTRY=host/path [TAG=…, default the tag make images gave them]
	@if [ -z '$(REGISTRY)' ]; then echo "make push: REGISTRY is not set; name the registry and path to push to: make push REGISTRY=host/path [TAG=…], e.g. REGISTRY=ghcr.io/openservicemesh" >&2; exit 2; fi
	@cd scripts/tools && GOWORK=off go run ./cmd/images push --in $(CURDIR)/.bin/images --registry '$(REGISTRY)' $(if $(TAG),--tag '$(TAG)')

clean: ## remove local build outputs and dev stack state
	@rm -rf .bin .osm-dev
