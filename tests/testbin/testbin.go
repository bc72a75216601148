// Package testbin builds the real servers that OSM's integration tests run
// (the kubebox Kubernetes control plane, the Vault dev server) from their
// test-only modules under tests/, and caches the binaries.
//
// The cache key hashes the module's go.mod, go.sum and Go sources and the Go
// toolchain, so editing any of them triggers a rebuild. Concurrent callers,
// also in other processes, wait for one build instead of racing: the build
// holds a file lock and renames the finished binary into place. The cache is
// $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin, and keeps the newest three
// builds of each binary.
package testbin

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
	"time"
)

// EnvCacheDir overrides the binary cache directory.
const EnvCacheDir = "OSM_TESTBIN_DIR"

// Spec describes one test binary.
type Spec struct {
	// Name is the binary's name, e.g. "kubebox".
	Name string
	// Module is the directory of its Go module under tests/, e.g. "kubebox".
	Module string
	// Package is the main package to build, relative to the module.
	Package string
	// BinEnv names an environment variable that, when set, points at a
	// prebuilt binary to use as is: nothing is built or cached.
	BinEnv string
	// SrcEnv names an environment variable that overrides the module's
	// location.
	SrcEnv string
	// ColdBuild is how long a cold build takes, for the progress message.
	ColdBuild string
	// Env is added to the go build environment (GOWORK=off always is).
	Env []string
}

// Options configure Build.
type Options struct {
	// SourceDir is the module to build. Default: $SrcEnv, or found next to
	// this package's source or above the working directory.
	SourceDir string
	// CacheDir is where built binaries are kept. Default: CacheDir().
	CacheDir string
	// Output receives the go build output and progress lines. Nil discards them.
	Output io.Writer
}

// keepBuilds is how many builds of one binary the cache keeps, newest first.
const keepBuilds = 3

// Build returns the path of the binary built from the current sources,
// building it first if the cache has none.
func Build(ctx context.Context, s Spec, o Options) (string, error) {
	if s.BinEnv != "" {
		if bin := os.Getenv(s.BinEnv); bin != "" {
			if _, err := os.Stat(bin); err != nil {
				return "", fmt.Errorf("%s: %w", s.BinEnv, err)
			}
			return bin, nil
		}
	}
	out := o.Output
	if out == nil {
		out = io.Discard
	}
	src := o.SourceDir
	if src == "" {
		var err error
		if src, err = SourceDir(s); err != nil {
			return "", err
		}
	}
	cache := o.CacheDir
	if cache == "" {
		var err error
		if cache, err = CacheDir(); err != nil {
			return "", err
		}
	}
	key, err := cacheKey(ctx, s, src)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, s.Name+"-"+key)
	bin := filepath.Join(dir, s.Name)
	if isExecutable(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if isExecutable(bin) { // built by another process while we waited
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	defer os.Remove(tmp)
	fmt.Fprintf(out, "building %s from %s into %s (a cold build takes %s)\n", s.Name, src, bin, s.ColdBuild)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, s.Package)
	cmd.Dir = src
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), s.Env...)
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(out, &stderr)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", s.Name, src, err, stderr.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "built %s in %s\n", s.Name, time.Since(start).Round(time.Second))
	prune(cache, s.Name, dir, out)
	return bin, nil
}

// prune removes all but the newest keepBuilds builds of name other than
// keep, skipping any that another process is building. A process still
// running a removed binary is unaffected.
func prune(cache, name, keep string, out io.Writer) {
	dirs, err := filepath.Glob(filepath.Join(cache, name+"-*"))
	if err != nil {
		return
	}
	type build struct {
		dir string
		mod time.Time
	}
	var builds []build
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || d == keep {
			continue
		}
		builds = append(builds, build{d, fi.ModTime()})
	}
	sort.Slice(builds, func(i, j int) bool { return builds[i].mod.After(builds[j].mod) })
	for i, b := range builds {
		if i < keepBuilds-1 {
			continue
		}
		unlock, ok, err := tryLockFile(b.dir + ".lock")
		if err != nil || !ok {
			continue
		}
		if err := os.RemoveAll(b.dir); err == nil {
			fmt.Fprintf(out, "removed old %s build %s\n", name, b.dir)
			_ = os.Remove(b.dir + ".lock")
		}
		unlock()
	}
}

// CacheDir returns the directory for cached test binaries:
// $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no %s and no home directory: %w", EnvCacheDir, err)
	}
	return filepath.Join(home, ".cache", "osm-testbin"), nil
}

// SourceDir locates the module of s: $SrcEnv, else next to this package's
// source (tests/<module>), else above the working directory.
func SourceDir(s Spec) (string, error) {
	if s.SrcEnv != "" {
		if d := os.Getenv(s.SrcEnv); d != "" {
			return filepath.Abs(d)
		}
	}
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", s.Module))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			candidates = append(candidates, filepath.Join(d, s.Module), filepath.Join(d, "tests", s.Module))
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
	hint := ""
	if s.SrcEnv != "" {
		hint = "; set " + s.SrcEnv
	}
	return "", fmt.Errorf("cannot find the tests/%s module%s", s.Module, hint)
}

// cacheKey hashes the toolchain and every Go source, go.mod and go.sum of
// the module.
func cacheKey(ctx context.Context, s Spec, src string) (string, error) {
	h := sha256.New()
	goenv, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	fmt.Fprintf(h, "%s-cache-v1\n%s\n", s.Module, goenv)
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
		return "", errors.New(s.Module + " module has no files")
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
