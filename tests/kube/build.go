package kube

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

// Environment variables that steer where the kubebox binary comes from.
const (
	// EnvTestbinDir overrides the binary cache directory
	// (default $HOME/.cache/osm-testbin).
	EnvTestbinDir = "OSM_TESTBIN_DIR"
	// EnvKubeboxBin names a prebuilt kubebox binary to use as is; nothing
	// is built or cached.
	EnvKubeboxBin = "OSM_KUBEBOX_BIN"
	// EnvKubeboxSrc overrides the location of the tests/kubebox module.
	EnvKubeboxSrc = "OSM_KUBEBOX_SRC"
)

// BuildOptions configures Binary.
type BuildOptions struct {
	// SourceDir is the tests/kubebox module. Default: $OSM_KUBEBOX_SRC, or
	// found from this package's source location or the working directory.
	SourceDir string
	// CacheDir is where built binaries are kept. Default: $OSM_TESTBIN_DIR,
	// or $HOME/.cache/osm-testbin.
	CacheDir string
	// Output receives the go build output and progress lines. Nil discards
	// them.
	Output io.Writer
}

// Binary returns the path of a kubebox binary built from the current
// tests/kubebox sources, building it first if the cache has none. The cache
// key hashes the module's go.mod, go.sum and sources and the Go toolchain,
// so editing any of them triggers a rebuild. Concurrent callers, also in
// other processes, wait for one build instead of racing: the build holds a
// file lock and renames the finished binary into place.
//
// A cold build compiles kube-apiserver and kube-controller-manager and takes
// 8 to 15 minutes on two cores, longer than go test's default timeout; run
// scripts/build-testbins.sh first.
func Binary(ctx context.Context, o BuildOptions) (string, error) {
	if bin := os.Getenv(EnvKubeboxBin); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s: %w", EnvKubeboxBin, err)
		}
		return bin, nil
	}
	out := o.Output
	if out == nil {
		out = io.Discard
	}
	src := o.SourceDir
	if src == "" {
		var err error
		if src, err = SourceDir(); err != nil {
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
	key, err := cacheKey(ctx, src)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "kubebox-"+key)
	bin := filepath.Join(dir, "kubebox")
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
	fmt.Fprintf(out, "building kubebox from %s into %s (a cold build takes 8-15 minutes)\n", src, bin)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./cmd/kubebox")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(out, &stderr)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build kubebox in %s: %w\n%s", src, err, stderr.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "built kubebox in %s\n", time.Since(start).Round(time.Second))
	pruneCache(cache, dir, out)
	return bin, nil
}

// keepBuilds is how many kubebox builds the cache keeps, newest first.
const keepBuilds = 3

// pruneCache removes all but the newest keepBuilds kubebox builds other
// than keep, skipping any that another process is building. A process still
// running a removed binary is unaffected.
func pruneCache(cache, keep string, out io.Writer) {
	dirs, err := filepath.Glob(filepath.Join(cache, "kubebox-*"))
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
			fmt.Fprintf(out, "removed old kubebox build %s\n", b.dir)
			_ = os.Remove(b.dir + ".lock")
		}
		unlock()
	}
}

// CacheDir returns the directory for cached test binaries:
// $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvTestbinDir); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no %s and no home directory: %w", EnvTestbinDir, err)
	}
	return filepath.Join(home, ".cache", "osm-testbin"), nil
}

// SourceDir locates the tests/kubebox module: $OSM_KUBEBOX_SRC, else next
// to this package's source, else above the working directory.
func SourceDir() (string, error) {
	if d := os.Getenv(EnvKubeboxSrc); d != "" {
		return filepath.Abs(d)
	}
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", "kubebox"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			candidates = append(candidates, filepath.Join(d, "kubebox"), filepath.Join(d, "tests", "kubebox"))
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
	return "", fmt.Errorf("cannot find the tests/kubebox module; set %s", EnvKubeboxSrc)
}

// cacheKey hashes the toolchain and every file of the kubebox module.
func cacheKey(ctx context.Context, src string) (string, error) {
	h := sha256.New()
	goenv, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	fmt.Fprintf(h, "kubebox-cache-v1\n%s\n", goenv)
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
		return "", errors.New("kubebox module has no files")
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
