package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushOptions configures one push.
type pushOptions struct {
	In       string   // the build's --out; default <repo root>/.bin/images
	Registry string   // required: images go to <registry>/osm-<service>
	Tag      string   // default: the tag images.json records
	Services []string // default: every image images.json lists
	Insecure bool     // allow plain HTTP to the registry
	Log      io.Writer
	// Remote adds options to every registry call (tests pass a transport).
	Remote []remote.Option
}

// pushed is one image that push wrote.
type pushed struct {
	Ref    name.Tag
	Digest v1.Hash
}

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", "Push the layouts that images build wrote to <registry>/osm-<service>:<tag> (make push REGISTRY=… [TAG=…]).\nCredentials come from the Docker config (~/.docker/config.json, $DOCKER_CONFIG), as `docker login` or `crane auth login` write it.", stdout, stderr)
	o := pushOptions{Log: stdout}
	var services string
	fs.StringVar(&o.In, "in", "", "the directory images build wrote (its --out): layouts and images.json (default <repo root>/.bin/images, found from the current directory)")
	fs.StringVar(&o.Registry, "registry", "", "required: registry host and path to push to, e.g. ghcr.io/openservicemesh or localhost:5000/osm; each image goes to <registry>/osm-<service>")
	fs.StringVar(&o.Tag, "tag", "", "tag to push (default the tag images.json records: the version of the build)")
	fs.StringVar(&services, "services", "", "comma-separated services to push (default every image in images.json)")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP to the registry (localhost and 127.0.0.1 are always allowed)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	o.Services = splitList(services)
	if o.In == "" {
		src, err := readSource(ctx, ".")
		if err != nil {
			return fmt.Errorf("--in not given and no repository here to find .bin/images in: %w", err)
		}
		o.In = filepath.Join(src.Root, ".bin", "images")
	}
	_, err := push(ctx, o)
	return err
}

// push pushes the images images.json in o.In lists, checks that the
// registry reports the digests the build recorded, and returns them.
func push(ctx context.Context, o pushOptions) ([]pushed, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if strings.TrimSpace(o.Registry) == "" {
		return nil, errors.New("--registry is required (make push REGISTRY=host/path): the registry and path to push to, e.g. ghcr.io/openservicemesh")
	}
	b, err := os.ReadFile(filepath.Join(o.In, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--in %s holds no %s: run `make images` (images build) first", o.In, manifestFile)
	}
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("--in: %s: %w", filepath.Join(o.In, manifestFile), err)
	}
	tag := o.Tag
	if tag == "" {
		tag = m.Tag
	}
	var nameOpts []name.Option
	if o.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	var todo []manifestImage
	for _, s := range o.Services {
		i := slices.IndexFunc(m.Images, func(im manifestImage) bool { return im.Service == s })
		if i < 0 {
			return nil, fmt.Errorf("--services: %q is not in %s (built: %s)", s, filepath.Join(o.In, manifestFile), servicesOf(m.Images))
		}
		todo = append(todo, m.Images[i])
	}
	if len(o.Services) == 0 {
		todo = m.Images
	}
	if m.Dirty {
		fmt.Fprintf(o.Log, "images: warning: built from a modified tree (version %s)\n", m.Version)
	}
	rOpts := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, o.Remote...)
	var out []pushed
	for _, im := range todo {
		ref, err := imageTag(o.Registry, im.Service, tag, nameOpts...)
		if err != nil {
			return out, fmt.Errorf("--registry %q with tag %q does not name an image: %w", o.Registry, tag, err)
		}
		idx, err := layoutIndex(filepath.Join(o.In, im.Layout), im.Digest)
		if err != nil {
			return out, fmt.Errorf("image of service %s: %w", im.Service, err)
		}
		if err := remote.WriteIndex(ref, idx, rOpts...); err != nil {
			return out, fmt.Errorf("push %s: %w", ref, err)
		}
		desc, err := remote.Head(ref, rOpts...)
		if err != nil {
			return out, fmt.Errorf("push %s: read it back: %w", ref, err)
		}
		if desc.Digest.String() != im.Digest {
			return out, fmt.Errorf("push %s: the registry reports digest %s, the layout holds %s", ref, desc.Digest, im.Digest)
		}
		fmt.Fprintf(o.Log, "images: pushed %s@%s\n", ref, desc.Digest)
		out = append(out, pushed{Ref: ref, Digest: desc.Digest})
	}
	return out, nil
}

// layoutIndex returns the image index with digest want from the OCI layout
// at dir.
func layoutIndex(dir, want string) (v1.ImageIndex, error) {
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", dir, err)
	}
	h, err := v1.NewHash(want)
	if err != nil {
		return nil, fmt.Errorf("layout %s: digest %q in %s: %w", dir, want, manifestFile, err)
	}
	idx, err := root.ImageIndex(h)
	if err != nil {
		return nil, fmt.Errorf("layout %s does not hold the index %s that %s records (rebuild with make images): %w", dir, want, manifestFile, err)
	}
	return idx, nil
}

func servicesOf(ims []manifestImage) string {
	var s []string
	for _, im := range ims {
		s = append(s, im.Service)
	}
	return strings.Join(s, ", ")
}
