package kube

import (
	"context"

	"github.com/openservicemesh/osm/tests/testbin"
)

// Environment variables that steer where the kubebox binary comes from.
const (
	// EnvTestbinDir overrides the binary cache directory
	// (default $HOME/.cache/osm-testbin).
	EnvTestbinDir = testbin.EnvCacheDir
	// EnvKubeboxBin names a prebuilt kubebox binary to use as is; nothing
	// is built or cached.
	EnvKubeboxBin = "OSM_KUBEBOX_BIN"
	// EnvKubeboxSrc overrides the location of the tests/kubebox module.
	EnvKubeboxSrc = "OSM_KUBEBOX_SRC"
)

// Kubebox describes the kubebox test binary.
var Kubebox = testbin.Spec{
	Name:      "kubebox",
	Module:    "kubebox",
	Package:   "./cmd/kubebox",
	BinEnv:    EnvKubeboxBin,
	SrcEnv:    EnvKubeboxSrc,
	ColdBuild: "8-15 minutes",
}

// BuildOptions configures Binary: the tests/kubebox sources (default
// $OSM_KUBEBOX_SRC, or found from this package), the cache directory
// (default $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin) and where the
// build output goes.
type BuildOptions = testbin.Options

// Binary returns the path of a kubebox binary built from the current
// tests/kubebox sources, building it first if the cache has none (see
// package testbin).
//
// A cold build compiles kube-apiserver and kube-controller-manager and takes
// 8 to 15 minutes on two cores, longer than go test's default timeout; run
// scripts/build-testbins.sh first.
func Binary(ctx context.Context, o BuildOptions) (string, error) {
	return testbin.Build(ctx, Kubebox, o)
}

// CacheDir returns the directory for cached test binaries.
func CacheDir() (string, error) { return testbin.CacheDir() }

// SourceDir locates the tests/kubebox module.
func SourceDir() (string, error) { return testbin.SourceDir(Kubebox) }
