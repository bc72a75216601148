// Package chart holds the Helm chart deploy/charts/osm, packed into the
// binary. go:embed cannot reach outside the module, so osm.tgz is a
// generated copy of the chart: `go generate ./internal/chart` (make
// osm-chart) packs it again, and make osm-chart-check (run by make test)
// fails when it differs from deploy/charts/osm.
package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

//go:generate go run ./pack -src ../../../../deploy/charts/osm -o osm.tgz

//go:embed osm.tgz
var archive []byte

// Name is the chart's name, the top directory of the archive.
const Name = "osm"

// Load returns the embedded chart with its subcharts.
func Load() (*chartv2.Chart, error) {
	c, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("load the embedded chart: %w", err)
	}
	return c, nil
}

// Archive returns the embedded chart archive.
func Archive() []byte { return archive }

// Pack writes the chart directory dir as a gzipped tar under Name/, the
// layout `helm package` gives. Entries are sorted and carry no time, owner
// or mode other than 0644 files, so the same tree packs to the same tar.
func Pack(dir string, w io.Writer) error {
	files, err := readTree(dir)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for _, name := range sortedKeys(files) {
		hdr := &tar.Header{Name: path.Join(Name, name), Mode: 0o644, Size: int64(len(files[name])),
			ModTime: time.Unix(0, 0).UTC(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Diff compares a packed chart with the chart directory dir and returns
// the files that differ, each as "changed: P", "missing: P" (in dir, not in
// the archive) or "extra: P" (in the archive only); none when it is current.
func Diff(dir string, packed []byte) ([]string, error) {
	want, err := readTree(dir)
	if err != nil {
		return nil, err
	}
	got, err := unpack(packed)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range sortedKeys(want) {
		g, ok := got[name]
		switch {
		case !ok:
			out = append(out, "missing: "+name)
		case !bytes.Equal(g, want[name]):
			out = append(out, "changed: "+name)
		}
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			out = append(out, "extra: "+name)
		}
	}
	return out, nil
}

// readTree reads every regular file under dir, keyed by its slash path
// relative to dir.
func readTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chart %s: %w", dir, err)
	}
	if _, ok := files["Chart.yaml"]; !ok {
		return nil, fmt.Errorf("read chart %s: no Chart.yaml", dir)
	}
	return files, nil
}

// unpack reads a packed chart into its files, keyed without the Name/ prefix.
func unpack(packed []byte) (map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return nil, fmt.Errorf("read chart archive: %w", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read chart archive: %w", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read chart archive %s: %w", hdr.Name, err)
		}
		rel, ok := cutPrefix(hdr.Name, Name+"/")
		if !ok {
			return nil, fmt.Errorf("read chart archive: %s is not under %s/", hdr.Name, Name)
		}
		files[rel] = b
	}
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return s, false
	}
	return s[len(prefix):], true
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
