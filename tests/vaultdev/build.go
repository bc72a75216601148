//go:build unix

// Package vaultdev runs a real HashiCorp Vault dev server on loopback for
// OSM's integration tests: `vault server -dev`, unsealed and in memory, with
// a known root token. The vault binary is built from the Go module in
// tests/vaultbox (outside go.work: Vault is BSL-licensed and never shipped
// or linked into OSM) and cached, keyed by that module's files and the Go
// toolchain. A cold build takes about 12 minutes on two cores.
package vaultdev

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Environment variables that steer where the vault binary comes from.
const (
	// EnvTestbinDir overrides the binary cache directory
	// (default $HOME/.cache/osm-testbin), shared with the kube harness.
	EnvTestbinDir = "OSM_TESTBIN_DIR"
	// EnvVaultBin names a prebuilt vault binary to use as is.
	EnvVaultBin = "OSM_VAULT_BIN"
	// EnvVaultboxSrc overrides the location of the tests/vaultbox module.
	EnvVaultboxSrc = "OSM_VAULTBOX_SRC"
)

// BuildOptions configures Binary.
type BuildOptions struct {
	// SourceDir is the tests/vaultbox module; default found next to this
	// package or above the working directory.
	SourceDir string
	// CacheDir keeps built binaries; default $OSM_TESTBIN_DIR or
	// $HOME/.cache/osm-testbin.
	CacheDir string
	// Output receives build output and progress; nil discards it.
	Output io.Writer
}

// Binary returns the path of a vault binary built from tests/vaultbox,
// building it first when the cache has none. Concurrent callers, also in
// other processes, wait for one build: it holds a file lock and renames the
// finished binary into place.
func Binary(ctx context.Context, o BuildOptions) (string, error) {
	if bin := os.Getenv(EnvVaultBin); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s: %w", EnvVaultBin, err)
		}
		return bin, nil
	}
	out := o.Output
	if out == nil {
		out = io.Discard
	}
	src, cache := o.SourceDir, o.CacheDir
	var err error
	if src == "" {
		if src, err = sourceDir(); err != nil {
			return "", err
		}
	}
	if cache == "" {
		if cache, err = cacheDir(); err != nil {
			return "", err
		}
	}
	key, err := cacheKey(ctx, src)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "vault-"+key)
	bin := filepath.Join(dir, "vault")
	if isExecutable(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if isExecutable(bin) {
		return bin, nil
	}
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	defer os.Remove(tmp)
	fmt.Fprintf(out, "building vault from %s into %s (a cold build takes about 12 minutes)\n", src, bin)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./cmd/vault")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(out, &stderr)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build vault in %s: %w\n%s", src, err, stderr.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "built vault in %s\n", time.Since(start).Round(time.Second))
	return bin, nil
}

func cacheDir() (string, error) {
	if d := os.Getenv(EnvTestbinDir); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no %s and no home directory: %w", EnvTestbinDir, err)
	}
	return filepath.Join(home, ".cache", "osm-testbin"), nil
}

func sourceDir() (string, error) {
	if d := os.Getenv(EnvVaultboxSrc); d != "" {
		return filepath.Abs(d)
	}
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", "vaultbox"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			candidates = append(candidates, filepath.Join(d, "vaultbox"), filepath.Join(d, "tests", "vaultbox"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "go.mod")); err == nil {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("cannot find the tests/vaultbox module; set %s", EnvVaultboxSrc)
}

// cacheKey hashes the toolchain and the vaultbox module's go.mod, go.sum
// and Go sources.
func cacheKey(ctx context.Context, src string) (string, error) {
	h := sha256.New()
	goenv, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	fmt.Fprintf(h, "vaultbox-cache-v1\n%s\n", goenv)
	var files []string
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && path != src {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", errors.New("vaultbox module has no files")
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(src, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lockFile takes an exclusive advisory lock on path, waiting until it is
// free or ctx ends. The kernel drops the lock if the process dies.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
