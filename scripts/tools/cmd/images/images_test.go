package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// The tests build one service, the smallest, for both platforms, with the
// program itself (built without -race: the race detector makes gzip some 15
// times slower, and a build runs in one goroutine), from a clone of HEAD,
// so that edits in the work tree while the tests run do not change the
// builds. A cold build cache costs about a minute a platform on 2 cores.
const testService = "xds-edge"

var testPlatforms = []string{"linux/amd64", "linux/arm64"}

// testRoot is the directory the tests' builds go under; TestMain removes it.
var testRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "images-test-")
	if err != nil {
		log.Fatal(err)
	}
	testRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testBuilds are the builds the tests look at.
type testBuilds struct {
	// repo is a clean clone of the repository's HEAD, revision its commit.
	repo, revision string
	// a and b are two builds of the clean clone, into dirA and dirB.
	dirA, dirB string
	a, b       *manifest
	// dirty is a third build, into dirDirty, after an untracked file was
	// added to the clone.
	dirDirty string
	dirty    *manifest
	err      error
}

var (
	buildsOnce sync.Once
	builds     testBuilds
)

// built runs the tests' builds once for all the tests that use them.
func built(t *testing.T) testBuilds {
	t.Helper()
	buildsOnce.Do(func() { builds.err = runTestBuilds(t, &builds) })
	if builds.err != nil {
		t.Fatal(builds.err)
	}
	return builds
}

func runTestBuilds(t *testing.T, b *testBuilds) error {
	ctx := t.Context()
	top, err := git(ctx, ".", "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	b.repo = filepath.Join(testRoot, "src")
	if _, err := git(ctx, testRoot, "clone", "--quiet", top, b.repo); err != nil {
		return err
	}
	if b.revision, err = git(ctx, b.repo, "rev-parse", "HEAD"); err != nil {
		return err
	}
	prog := filepath.Join(testRoot, "images")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", prog, ".")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build of the images program: %v\n%s", err, out)
	}
	b.dirA, b.dirB, b.dirDirty = filepath.Join(testRoot, "a"), filepath.Join(testRoot, "b"), filepath.Join(testRoot, "dirty")
	if b.a, err = runImagesBuild(t, prog, b.repo, b.dirA); err != nil {
		return err
	}
	if b.b, err = runImagesBuild(t, prog, b.repo, b.dirB); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.repo, "services", testService, "uncommitted.txt"), []byte("x\n"), 0o644); err != nil {
		return err
	}
	b.dirty, err = runImagesBuild(t, prog, b.repo, b.dirDirty)
	return err
}

// runImagesBuild runs `images build` of the test service in repo into out
// and returns the images.json it wrote.
func runImagesBuild(t *testing.T, prog, repo, out string) (*manifest, error) {
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), prog, "build", "--repo", repo, "--out", out, "--services", testService, "--platforms", strings.Join(testPlatforms, ","))
	stdout, err := cmd.CombinedOutput()
	t.Logf("images build --out %s: %.1fs\n%s", out, time.Since(start).Seconds(), stdout)
	if err != nil {
		return nil, fmt.Errorf("images build: %v\n%s", err, stdout)
	}
	b, err := os.ReadFile(filepath.Join(out, manifestFile))
	if err != nil {
		return nil, err
	}
	var m manifest
	return &m, json.Unmarshal(b, &m)
}

func TestBuildTwiceGivesTheSameDigests(t *testing.T) {
	b := built(t)
	if diff := cmp.Diff(b.a, b.b); diff != "" {
		t.Errorf("images.json of two builds of commit %s differ (-first +second):\n%s", b.a.Revision, diff)
	}
	if len(b.a.Images) != 1 || !strings.HasPrefix(b.a.Images[0].Digest, "sha256:") {
		t.Fatalf("images.json lists %+v, want one image of %s with a digest", b.a.Images, testService)
	}
	// Not only the digests: every file of the two layouts is the same.
	filesA, filesB := readTree(t, filepath.Join(b.dirA, testService)), readTree(t, filepath.Join(b.dirB, testService))
	if len(filesA) < 9 { // oci-layout, index.json, index, 2 × (manifest, config, layer)
		t.Errorf("layout holds %d files, want at least 9", len(filesA))
	}
	for name, a := range filesA {
		if bb, ok := filesB[name]; !ok || !bytes.Equal(a, bb) {
			t.Errorf("layout file %s differs between the two builds (in the second: %t)", name, ok)
		}
	}
	if len(filesA) != len(filesB) {
		t.Errorf("the first layout holds %d files, the second %d", len(filesA), len(filesB))
	}
}

func TestModifiedTreeIsMarked(t *testing.T) {
	b := built(t)
	if !b.dirty.Dirty || b.dirty.Version != b.a.Version+"-dirty" {
		t.Errorf("build of a tree with an untracked file: dirty %t version %q, want true and %q", b.dirty.Dirty, b.dirty.Version, b.a.Version+"-dirty")
	}
	if b.a.Dirty || strings.Contains(b.a.Version, "dirty") {
		t.Errorf("build of a clean clone: dirty %t version %q, want clean", b.a.Dirty, b.a.Version)
	}
	if b.dirty.Images[0].Digest == b.a.Images[0].Digest {
		t.Errorf("the modified tree's image has the commit's digest %s", b.a.Images[0].Digest)
	}
	idx := layoutIndexOf(t, filepath.Join(b.dirDirty, testService))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != b.a.Version+"-dirty" {
		t.Errorf("version label %q, want %q", got, b.a.Version+"-dirty")
	}
	files := layerFiles(t, img, b.dirty.Created)
	checkBinary(t, files["usr/local/bin/"+testService].data, im.Manifests[0].Platform.Architecture, b.revision, true)
}

func TestReadSourceVersions(t *testing.T) {
	dir := t.TempDir()
	commit := func(msg, date string) {
		t.Helper()
		cmd := exec.Command("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "--allow-empty", "-m", msg)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE="+date, "GIT_AUTHOR_DATE="+date)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git commit: %v\n%s", err, out)
		}
	}
	gitOut(t, dir, "init", "--quiet")
	commit("one", "2024-05-06T07:08:09Z")
	head := gitOut(t, dir, "rev-parse", "HEAD")
	for _, step := range []struct {
		name    string
		do      func()
		version string
		dirty   bool
	}{
		{"no tag", func() {}, head[:12], false},
		{"tagged", func() { gitOut(t, dir, "tag", "v1.2.3") }, "v1.2.3", false},
		{"other tags are not versions", func() { gitOut(t, dir, "tag", "services/x/v9.9.9") }, "v1.2.3", false},
		{"untracked file", func() {
			if err := os.WriteFile(filepath.Join(dir, "new.txt"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "v1.2.3-dirty", true},
		{"ignored file", func() {
			if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("new.txt\n.gitignore\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "v1.2.3", false},
	} {
		step.do()
		s, err := readSource(t.Context(), dir)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if s.Version != step.version || s.Dirty != step.dirty || s.Revision != head {
			t.Errorf("%s: version %q dirty %t revision %s, want %q %t %s", step.name, s.Version, s.Dirty, s.Revision, step.version, step.dirty, head)
		}
		if want := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC); !s.Time.Equal(want) {
			t.Errorf("%s: time %s, want the commit time %s", step.name, s.Time, want)
		}
	}
}

// readTree returns every regular file under dir by its relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImageConfigAndFiles(t *testing.T) {
	b := built(t)
	head := b.revision
	commitTime := time.Unix(mustAtoi(t, gitOut(t, b.repo, "show", "-s", "--format=%ct", "HEAD")), 0).UTC()

	idx := layoutIndexOf(t, filepath.Join(b.dirA, testService))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.OS+"/"+d.Platform.Architecture)
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: manifest media type %s, want %s", d.Platform, d.MediaType, types.OCIManifestSchema1)
		}
	}
	if !slices.Equal(plats, testPlatforms) {
		t.Errorf("index platforms %v, want %v", plats, testPlatforms)
	}
	if got := im.Annotations["org.opencontainers.image.revision"]; got != head {
		t.Errorf("index annotation revision %q, want %q", got, head)
	}

	for _, d := range im.Manifests {
		t.Run(d.Platform.Architecture, func(t *testing.T) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			wantVersion := gitOut(t, b.repo, "describe", "--tags", "--always", "--abbrev=12", "--match", "v[0-9]*")
			wantLabels := map[string]string{
				"org.opencontainers.image.source":   "https://github.com/openservicemesh/osm",
				"org.opencontainers.image.revision": head,
				"org.opencontainers.image.version":  wantVersion,
				"org.opencontainers.image.title":    "osm-" + testService,
				"org.opencontainers.image.created":  commitTime.Format(time.RFC3339),
			}
			if diff := cmp.Diff(wantLabels, cf.Config.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("user %q, want the non-root 65532:65532", cf.Config.User)
			}
			if want := []string{"/usr/local/bin/" + testService}; !slices.Equal(cf.Config.Entrypoint, want) {
				t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, want)
			}
			if !cf.Created.Time.Equal(commitTime) {
				t.Errorf("created %s, want the commit time %s", cf.Created.Time, commitTime)
			}
			if cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture {
				t.Errorf("config platform %s/%s, index says %s", cf.OS, cf.Architecture, d.Platform)
			}

			files := layerFiles(t, img, commitTime)
			bin := files["usr/local/bin/"+testService]
			if bin.mode != 0o755 || bin.typ != tar.TypeReg || bin.uid != 0 {
				t.Errorf("binary: type %c mode %o uid %d, want a regular file 0755 owned by root", bin.typ, bin.mode, bin.uid)
			}
			checkBinary(t, bin.data, d.Platform.Architecture, head, false)
			if !strings.Contains(string(files["etc/passwd"].data), "osm:x:65532:65532:") {
				t.Errorf("/etc/passwd has no osm user 65532:\n%s", files["etc/passwd"].data)
			}
			if !strings.Contains(string(files["etc/group"].data), "osm:x:65532:") {
				t.Errorf("/etc/group has no osm group 65532:\n%s", files["etc/group"].data)
			}
			ca := files["etc/ssl/certs/ca-certificates.crt"]
			if n := countCerts(t, ca.data); n < 100 {
				t.Errorf("CA bundle holds %d certificates, want the ~100+ NSS roots", n)
			}
			if ca.mode != 0o644 {
				t.Errorf("CA bundle mode %o, want 0644", ca.mode)
			}
			if home := files["home/osm/"]; home.uid != 65532 || home.typ != tar.TypeDir {
				t.Errorf("/home/osm: type %c uid %d, want a directory of 65532", home.typ, home.uid)
			}
		})
	}
}

// tarFile is one entry of a layer.
type tarFile struct {
	typ  byte
	mode int64
	uid  int
	data []byte
}

// layerFiles reads the image's only layer; every entry must carry the
// commit time and no owner name.
func layerFiles(t *testing.T, img v1.Image, mtime time.Time) map[string]tarFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]tarFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %s owner %q:%q, want the commit time %s and no names", h.Name, h.ModTime, h.Uname, h.Gname, mtime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = tarFile{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, data: data}
	}
	return out
}

// checkBinary checks that bin is a static ELF binary for goarch, built
// without cgo, with -trimpath and stamped with the commit.
func checkBinary(t *testing.T, bin []byte, goarch, revision string, dirty bool) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("binary is not ELF: %v", err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
	if f.Machine != want {
		t.Errorf("binary machine %s, want %s", f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: it is not static")
		}
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	wantSettings := map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOARCH": goarch, "vcs.revision": revision, "vcs.modified": fmt.Sprint(dirty)}
	for k, v := range wantSettings {
		if settings[k] != v {
			t.Errorf("binary build setting %s=%q, want %q", k, settings[k], v)
		}
	}
}

func countCerts(t *testing.T, data []byte) int {
	t.Helper()
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return n
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			t.Errorf("CA bundle certificate %d: %v", n, err)
		}
		n++
	}
}

func TestPushPullSameDigests(t *testing.T) {
	b := built(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	reg := strings.TrimPrefix(srv.URL, "http://") + "/mesh"

	got, err := push(t.Context(), pushOptions{In: b.dirA, Registry: reg, Tag: "canary"})
	if err != nil {
		t.Fatal(err)
	}
	want := b.a.Images[0]
	if len(got) != 1 || got[0].Ref.String() != reg+"/osm-"+testService+":canary" || got[0].Digest.String() != want.Digest {
		t.Fatalf("pushed %+v, want %s/osm-%s:canary@%s", got, reg, testService, want.Digest)
	}

	// Pull it back by tag: the same index digest, and every manifest,
	// config and layer of the layout under the same digest (validate.Index
	// downloads every blob and checks it against its digest).
	ref, err := name.NewTag(reg + "/osm-" + testService + ":canary")
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := pulled.Digest(); err != nil || d.String() != want.Digest {
		t.Fatalf("pulled index digest %v (%v), want %s", d, err, want.Digest)
	}
	if err := validate.Index(pulled); err != nil {
		t.Errorf("pulled index does not validate: %v", err)
	}
	local := layoutIndexOf(t, filepath.Join(b.dirA, testService))
	lm, _ := local.IndexManifest()
	pm, err := pulled.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(lm, pm); diff != "" {
		t.Errorf("pulled index differs from the layout's (-layout +pulled):\n%s", diff)
	}
	for _, d := range pm.Manifests {
		li, err := local.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := pulled.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		lc, _ := li.ConfigName()
		pc, err := pi.ConfigName()
		if err != nil || pc != lc {
			t.Errorf("%s: pulled config %s (%v), layout %s", d.Platform, pc, err, lc)
		}
		ll, _ := li.Layers()
		pl, err := pi.Layers()
		if err != nil || len(pl) != len(ll) {
			t.Fatalf("%s: pulled %d layers (%v), layout %d", d.Platform, len(pl), err, len(ll))
		}
		for i := range ll {
			ld, _ := ll[i].Digest()
			pd, _ := pl[i].Digest()
			if ld != pd {
				t.Errorf("%s: layer %d pulled %s, layout %s", d.Platform, i, pd, ld)
			}
		}
	}
}

func TestPushErrorsNameWhatIsWrong(t *testing.T) {
	b := built(t)
	for _, tc := range []struct {
		name string
		o    pushOptions
		want string
	}{
		{"no registry", pushOptions{In: b.dirA}, "--registry is required (make push REGISTRY=host/path)"},
		{"no build", pushOptions{In: t.TempDir(), Registry: "localhost:1/x"}, "run `make images`"},
		{"unknown service", pushOptions{In: b.dirA, Registry: "localhost:1/x", Services: []string{"nope"}}, `--services: "nope" is not in`},
		{"bad tag", pushOptions{In: b.dirA, Registry: "localhost:1/x", Tag: "a b"}, `--registry "localhost:1/x" with tag "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := push(t.Context(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("push error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestBuildErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    buildOptions
		want string
	}{
		{"unknown service", buildOptions{Repo: ".", Services: []string{"nope"}}, `--services: "nope" is not a directory under`},
		{"platform", buildOptions{Repo: ".", Platforms: []string{"windows/amd64"}}, `--platforms: "windows/amd64" is not supported`},
		{"not a repo", buildOptions{Repo: t.TempDir()}, "--repo "},
		{"bad tag", buildOptions{Repo: ".", Services: []string{testService}, Tag: "no/slash"}, `--tag "no/slash"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Out = t.TempDir()
			_, err := build(t.Context(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("build error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHelpListsTheFlags(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"build": {"-repo", "-out", "-services", "-platforms", "-registry", "-tag", "-source"},
		"push":  {"-in", "-registry", "-tag", "-services", "-insecure"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), []string{cmd, "--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help: %v, want flag.ErrHelp", cmd, err)
		}
		for _, f := range flags {
			if !regexp.MustCompile(`(?m)^  ` + f + `\b`).MatchString(stdout.String()) {
				t.Errorf("%s --help does not explain %s:\n%s", cmd, f, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"build", "--bogus"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("build --bogus: %v, want an error naming the flag", err)
	}
	if err := run(t.Context(), []string{"frobnicate"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), `"frobnicate"`) {
		t.Errorf("unknown command: %v, want an error naming it", err)
	}
}

func layoutIndexOf(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("layout %s lists %d entries, want 1", dir, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := git(t.Context(), dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
