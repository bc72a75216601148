#!/usr/bin/env bash
# Builds the test servers that integration tests run, once, into the test
# binary cache ($OSM_TESTBIN_DIR, default $HOME/.cache/osm-testbin), and
# prints their paths. Tests build them on demand too, but a cold build
# (8-15 minutes on two cores) outlasts go test's default timeout, so
# `make testbins` runs this first. A warm cache makes it a no-op.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests"

# kubebox: etcd + kube-apiserver + kube-controller-manager (tests/kubebox).
start=$SECONDS
kubebox=$(go run ./cmd/build-kubebox)
echo "kubebox: ${kubebox} ($((SECONDS - start))s)"
