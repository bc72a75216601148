//go:build unix

// Package vaultdev runs a real HashiCorp Vault dev server on loopback for
// OSM's integration tests: `vault server -dev`, unsealed and in memory, with
// a known root token. The vault binary is built from the Go module in
// tests/vaultbox (outside go.work: Vault is BSL-licensed and never shipped
// or linked into OSM) and cached by package testbin. A cold build takes
// about 12 minutes on two cores.
package vaultdev

import (
	"context"

	"github.com/openservicemesh/osm/tests/testbin"
)

// Environment variables that steer where the vault binary comes from.
const (
	// EnvTestbinDir overrides the binary cache directory
	// (default $HOME/.cache/osm-testbin), shared with the kube harness.
	EnvTestbinDir = testbin.EnvCacheDir
	// EnvVaultBin names a prebuilt vault binary to use as is.
	EnvVaultBin = "OSM_VAULT_BIN"
	// EnvVaultboxSrc overrides the location of the tests/vaultbox module.
	EnvVaultboxSrc = "OSM_VAULTBOX_SRC"
)

// Vault describes the vault test binary.
var Vault = testbin.Spec{
	Name:      "vault",
	Module:    "vaultbox",
	Package:   "./cmd/vault",
	BinEnv:    EnvVaultBin,
	SrcEnv:    EnvVaultboxSrc,
	ColdBuild: "about 12 minutes",
	Env:       []string{"GOFLAGS=-mod=readonly"},
}

// BuildOptions configures Binary: the tests/vaultbox sources (default
// found next to this package), the cache directory (default
// $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin) and where the build
// output goes.
type BuildOptions = testbin.Options

// Binary returns the path of a vault binary built from tests/vaultbox,
// building it first when the cache has none (see package testbin).
func Binary(ctx context.Context, o BuildOptions) (string, error) {
	return testbin.Build(ctx, Vault, o)
}
