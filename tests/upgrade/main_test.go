package upgrade

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
	"github.com/openservicemesh/osm/tests/testbin"
)

var (
	// cluster is the kube-apiserver harness every run shares.
	cluster *kube.Cluster
	// head builds this checkout's services, once per test binary.
	head *stack.Builder
	// baseCommit is the commit BASE names; baseErr says why the test
	// cannot build it (a shallow clone, no git), and the test skips.
	baseCommit string
	baseErr    error
)

func TestMain(m *testing.M) {
	flag.Parse()
	baseCommit, baseErr = readBase(filepath.Join(stack.RepoRoot(), "tests", "upgrade", "BASE"))
	if baseErr == nil {
		baseErr = haveCommit(stack.RepoRoot(), baseCommit)
	}
	if testing.Short() || baseErr != nil { // TestVersionSkew skips: no cluster
		os.Exit(m.Run())
	}
	os.Exit(kube.Main(m, &cluster, true, func(context.Context, *kube.Cluster) (func(), error) {
		dir, err := os.MkdirTemp("", "osm-upgrade-bin-")
		if err != nil {
			return nil, err
		}
		head = stack.NewBuilder(dir)
		return func() { os.RemoveAll(dir) }, nil
	}))
}

// readBase reads the commit the file BASE names: its first line that is
// neither blank nor a # comment, a full commit hash.
func readBase(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) != 40 || strings.Trim(line, "0123456789abcdef") != "" {
			return "", fmt.Errorf("%s: %q is not a full commit hash (40 hex digits)", path, line)
		}
		return line, nil
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s names no commit", path)
}

// haveCommit reports why the repository at root cannot give commit's tree.
func haveCommit(root, commit string) error {
	if _, err := exec.LookPath("git"); err != nil {
		return fmt.Errorf("no git to extract the base commit %s: %w", commit, err)
	}
	out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("the base commit %s (tests/upgrade/BASE) is not in the repository at %s (a shallow clone?); "+
			"fetch it with `git fetch --unshallow` or `git fetch origin %s`: %v %s", commit, root, commit, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// baseBuilder returns a builder of the base commit's services. The tree
// (git archive of the commit) and the binaries are cached in the test
// binary cache (testbin.CacheDir: $OSM_TESTBIN_DIR or ~/.cache/osm-testbin)
// under upgrade-<commit>-<go version>, so that a later run neither extracts
// nor builds again; each lands by a rename, so a killed run leaves nothing
// half-written behind. Other commits' entries are removed.
func baseBuilder(ctx context.Context, commit string, cs []stack.Component) (*stack.Builder, error) {
	cache, err := testbin.CacheDir()
	if err != nil {
		return nil, err
	}
	key := "upgrade-" + commit + "-" + runtime.Version()
	dir := filepath.Join(cache, key)
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	if old, _ := filepath.Glob(filepath.Join(cache, "upgrade-*")); len(old) > 0 {
		for _, o := range old {
			if filepath.Base(o) != key {
				_ = os.RemoveAll(o)
			}
		}
	}
	src := filepath.Join(dir, "src")
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		tmp, err := os.MkdirTemp(dir, "src-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if err := extract(ctx, stack.RepoRoot(), commit, tmp); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, src); err != nil {
			if _, serr := os.Stat(src); serr != nil { // not another run's tree
				return nil, err
			}
		}
	}
	tmpBin, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpBin)
	build := stack.NewBuilderAt(tmpBin, src)
	cached := stack.NewBuilderAt(filepath.Join(dir, "bin"), src)
	for _, c := range cs {
		bin := filepath.Join(dir, "bin", string(c))
		if _, err := os.Stat(bin); err != nil {
			built, err := build.Build(ctx, string(c))
			if err != nil {
				return nil, fmt.Errorf("base %s: %w", commit, err)
			}
			if err := os.Rename(built, bin); err != nil {
				return nil, err
			}
		}
		cached.Use(string(c), bin)
	}
	return cached, nil
}

// extract writes commit's tree, from the repository at root, into dir.
func extract(ctx context.Context, root, commit, dir string) error {
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", commit)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	var aerr, terr strings.Builder
	archive.Stderr, untar.Stderr = &aerr, &terr
	if err := untar.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		_ = untar.Wait()
		return fmt.Errorf("git archive %s: %w %s", commit, err, aerr.String())
	}
	if err := untar.Wait(); err != nil {
		return fmt.Errorf("untar %s: %w %s", commit, err, terr.String())
	}
	return nil
}
