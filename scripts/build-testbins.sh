#!/usr/bin/env bash
# Builds the test servers that integration tests run, once, into the test
# binary cache ($OSM_TESTBIN_DIR, default $HOME/.cache/osm-testbin), and
# prints their paths:
#   kubebox  etcd + kube-apiserver + kube-controller-manager (tests/kubebox;
#            8-15 minutes cold on two cores)
#   vault    `vault server -dev` for the cert-authority's Vault provider
#            tests (tests/vaultbox; about 12 minutes cold)
# Tests build them on demand too, but a cold build outlasts go test's
# default timeout, so `make testbins` runs this first. A warm cache makes it
# a no-op. Arguments name the binaries to build (default: all).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests"
go run ./cmd/build-testbins "$@"
