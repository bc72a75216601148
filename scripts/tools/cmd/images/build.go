package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	defaultRegistry = "ghcr.io/openservicemesh"
	defaultSource   = "https://github.com/openservicemesh/osm"
	// imagePrefix names a service's image: <registry>/osm-<service>.
	imagePrefix = "osm-"
	// manifestFile lists what one build wrote; push reads it.
	manifestFile = "images.json"
)

// supportedPlatforms are the platforms build accepts: Go cross-compiles the
// static binaries, so arm64 needs nothing of the host.
var supportedPlatforms = []string{"linux/amd64", "linux/arm64"}

// buildOptions configures one build.
type buildOptions struct {
	Repo      string   // a directory inside the repository
	Out       string   // where the layouts go; default <repo>/.bin/images
	Services  []string // default: every directory under services/
	Platforms []string // default: linux/amd64
	Registry  string   // recorded in images.json; default ghcr.io/openservicemesh
	Tag       string   // default: the source's version
	SourceURL string   // the org.opencontainers.image.source label; default the OSM repository
	Log       io.Writer
}

// manifest is images.json: what one build wrote, for push and for people.
type manifest struct {
	Revision  string          `json:"revision"`
	Version   string          `json:"version"`
	Dirty     bool            `json:"dirty"`
	Created   time.Time       `json:"created"`
	Go        string          `json:"go"`
	Registry  string          `json:"registry"`
	Tag       string          `json:"tag"`
	Platforms []string        `json:"platforms"`
	Images    []manifestImage `json:"images"`
}

// manifestImage is one service's image in images.json.
type manifestImage struct {
	Service string `json:"service"`
	// Layout is the OCI layout's directory, relative to images.json.
	Layout string `json:"layout"`
	// Image is <registry>/osm-<service>:<tag>.
	Image string `json:"image"`
	// Digest is the image index's digest, what a registry reports after push.
	Digest string `json:"digest"`
}

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("build", "Build one OCI image layout per service under --out (make images).", stdout, stderr)
	o := buildOptions{Log: stdout}
	var services, platforms string
	fs.StringVar(&o.Repo, "repo", ".", "a directory inside the OSM git repository: the services are built from its work tree and the labels read from its HEAD")
	fs.StringVar(&o.Out, "out", "", "directory for the layouts: <out>/<service> is an OCI image layout, <out>/images.json lists them (default <repo root>/.bin/images)")
	fs.StringVar(&services, "services", "", "comma-separated services to build (default every directory under services/)")
	fs.StringVar(&platforms, "platforms", "linux/amd64", "comma-separated platforms of each image's index: "+strings.Join(supportedPlatforms, ", "))
	fs.StringVar(&o.Registry, "registry", defaultRegistry, "registry and path the images are named under, <registry>/osm-<service>; recorded in images.json, push takes its own --registry")
	fs.StringVar(&o.Tag, "tag", "", "tag recorded in each layout's index (org.opencontainers.image.ref.name) and in images.json; it does not change the digests (default the version: git describe, -dirty for a modified tree)")
	fs.StringVar(&o.SourceURL, "source", defaultSource, "the org.opencontainers.image.source label")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	o.Services, o.Platforms = splitList(services), splitList(platforms)
	_, err := build(ctx, o)
	return err
}

// build builds the images o asks for and writes their layouts and
// images.json; it returns what it wrote to images.json.
func build(ctx context.Context, o buildOptions) (*manifest, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	src, err := readSource(ctx, o.Repo)
	if err != nil {
		return nil, fmt.Errorf("--repo %s: %w", o.Repo, err)
	}
	if o.Out == "" {
		o.Out = filepath.Join(src.Root, ".bin", "images")
	}
	if o.Tag == "" {
		o.Tag = src.Version
	}
	if o.SourceURL == "" {
		o.SourceURL = defaultSource
	}
	if o.Registry == "" {
		o.Registry = defaultRegistry
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64"}
	}
	for _, p := range o.Platforms {
		if !slices.Contains(supportedPlatforms, p) {
			return nil, fmt.Errorf("--platforms: %q is not supported; want one or more of %s", p, strings.Join(supportedPlatforms, ", "))
		}
	}
	all, err := listServices(src.Root)
	if err != nil {
		return nil, err
	}
	if len(o.Services) == 0 {
		o.Services = all
	}
	for _, s := range o.Services {
		if !slices.Contains(all, s) {
			return nil, fmt.Errorf("--services: %q is not a directory under %s; have %s", s, filepath.Join(src.Root, "services"), strings.Join(all, ", "))
		}
		if _, err := imageTag(o.Registry, s, o.Tag); err != nil {
			return nil, fmt.Errorf("--registry %q with --tag %q does not name an image: %w", o.Registry, o.Tag, err)
		}
	}
	ca, kept, skipped, err := caBundle()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	tmp, err := os.MkdirTemp(o.Out, ".build-")
	if err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	defer os.RemoveAll(tmp)

	dirty := ""
	if src.Dirty {
		dirty = " (the work tree has uncommitted changes)"
	}
	fmt.Fprintf(o.Log, "images: commit %s, version %s%s, %s, %d CA roots from %s %s (%d distrust-after roots left out)\n",
		src.Revision, src.Version, dirty, runtime.Version(), kept, bundleMod, moduleVersion(bundleMod), skipped)
	m := &manifest{
		Revision: src.Revision, Version: src.Version, Dirty: src.Dirty, Created: src.Time,
		Go: runtime.Version(), Registry: o.Registry, Tag: o.Tag, Platforms: o.Platforms,
	}
	for _, svc := range o.Services {
		start := time.Now()
		idx, err := serviceIndex(ctx, src, o, svc, ca, tmp)
		if err != nil {
			return nil, fmt.Errorf("image of service %s: %w", svc, err)
		}
		dir := filepath.Join(o.Out, svc)
		if err := writeLayout(idx, dir, o.Tag, tmp); err != nil {
			return nil, fmt.Errorf("image of service %s: layout %s: %w", svc, dir, err)
		}
		d, err := idx.Digest()
		if err != nil {
			return nil, err
		}
		im := manifestImage{Service: svc, Layout: svc, Image: imageName(o.Registry, svc) + ":" + o.Tag, Digest: d.String()}
		m.Images = append(m.Images, im)
		fmt.Fprintf(o.Log, "images: %s@%s -> %s (%.1fs)\n", im.Image, im.Digest, dir, time.Since(start).Seconds())
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, manifestFile), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	return m, nil
}

// imageName is the repository a service's image is pushed to.
func imageName(registry, service string) string {
	return strings.TrimSuffix(registry, "/") + "/" + imagePrefix + service
}

// imageTag is the reference <registry>/osm-<service>:<tag>; it fails
// unless tag is a whole, valid tag.
func imageTag(registry, service, tag string, opts ...name.Option) (name.Tag, error) {
	t, err := name.NewTag(imageName(registry, service)+":"+tag, opts...)
	if err != nil {
		return name.Tag{}, err
	}
	if t.TagStr() != tag {
		return name.Tag{}, fmt.Errorf("%q is not a valid tag", tag)
	}
	return t, nil
}

// listServices returns the directories under services/ that hold a go.mod.
func listServices(root string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "services"))
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(root, "services", e.Name(), "go.mod")); e.IsDir() && err == nil {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("list services: no module under %s", filepath.Join(root, "services"))
	}
	return out, nil
}

// serviceIndex builds a service's image for each platform and returns their
// index, annotated like the images' labels.
func serviceIndex(ctx context.Context, src source, o buildOptions, svc string, ca []byte, tmp string) (v1.ImageIndex, error) {
	labels := map[string]string{
		"org.opencontainers.image.source":   o.SourceURL,
		"org.opencontainers.image.revision": src.Revision,
		"org.opencontainers.image.version":  src.Version,
		"org.opencontainers.image.title":    imagePrefix + svc,
		"org.opencontainers.image.created":  src.Time.Format(time.RFC3339),
	}
	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		goos, goarch, _ := strings.Cut(p, "/")
		bin, err := goBuild(ctx, src.Root, svc, goos, goarch, filepath.Join(tmp, svc+"-"+goos+"-"+goarch))
		if err != nil {
			return nil, err
		}
		img, err := image(svc, goos, goarch, bin, ca, src.Time, labels)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		plat := &v1.Platform{OS: goos, Architecture: goarch, Variant: variant(goarch)}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	return mutate.Annotations(idx, labels).(v1.ImageIndex), nil
}

// variant is the platform variant recorded for goarch, as other arm64 images
// record it.
func variant(goarch string) string {
	if goarch == "arm64" {
		return "v8"
	}
	return ""
}

// goBuild builds the service's binary the way CI's `make build` builds it
// alone (GOWORK=off, from the service's module), static and reproducible:
//   - CGO_ENABLED=0: no libc, the image has none;
//   - -trimpath: no path of this machine in the binary;
//   - -buildvcs=true: the build info holds vcs.revision, vcs.time and
//     vcs.modified of HEAD (libs/app logs it as the version); the same commit
//     and tree state give the same stamp, and git must be there;
//   - -ldflags=-s -w -buildid=: no symbol table or DWARF, no build ID;
//   - GOFLAGS, GOAMD64, GOARM64 and GOEXPERIMENT set here, so the caller's
//     environment does not change the binary.
func goBuild(ctx context.Context, root, svc, goos, goarch, out string) ([]byte, error) {
	dir := filepath.Join(root, "services", svc)
	pkg := "."
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		pkg = "./cmd/" + svc
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=true", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GOWORK=off", "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=", "GOFLAGS=-mod=readonly", "GO111MODULE=on")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s in %s (GOWORK=off GOOS=%s GOARCH=%s): %w\n%s", pkg, dir, goos, goarch, err, strings.TrimSpace(stderr.String()))
	}
	return os.ReadFile(out)
}

// image assembles one platform's image: one layer (rootfs), the config
// (non-root user, entrypoint, labels) and created at the commit time.
func image(svc, goos, goarch string, bin, ca []byte, created time.Time, labels map[string]string) (v1.Image, error) {
	gz, err := layerTar(rootfs(svc, bin, ca), created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "scripts/tools/cmd/images: " + svc + " binary, passwd, group, CA certificates"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = goos, goarch, variant(goarch)
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", userID, groupID),
		Entrypoint: []string{binDir + "/" + svc},
		Env:        []string{"PATH=" + binDir + ":/usr/bin:/bin"},
		WorkingDir: "/",
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cf)
}

// writeLayout writes idx as the only entry of a fresh OCI layout at dir,
// tagged tag: it is written beside dir first and then renamed over it, so a
// failed build leaves the previous layout whole.
func writeLayout(idx v1.ImageIndex, dir, tag, tmp string) error {
	staging, err := os.MkdirTemp(tmp, filepath.Base(dir)+"-layout-")
	if err != nil {
		return err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return err
	}
	p, err := layout.Write(staging, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(staging, dir)
}
