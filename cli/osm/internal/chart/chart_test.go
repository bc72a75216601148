package chart

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// source is the chart the archive is packed from.
const source = "../../../../deploy/charts/osm"

// TestEmbeddedChartIsCurrent: the embedded archive holds exactly the files
// of deploy/charts/osm (make osm-chart-check runs the same comparison).
func TestEmbeddedChartIsCurrent(t *testing.T) {
	diff, err := Diff(source, Archive())
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("osm.tgz is stale against %s: run make osm-chart\n%v", source, diff)
	}
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != Name || len(c.Dependencies()) != 6 || len(c.CRDObjects()) == 0 {
		t.Fatalf("embedded chart %s with %d subcharts and %d CRDs; want osm, its 6 subcharts and the CRDs",
			c.Name(), len(c.Dependencies()), len(c.CRDObjects()))
	}
}

// TestPackIsStableAndDiffFindsChanges: packing twice gives the same bytes,
// and Diff names a changed, a new and a removed file.
func TestPackIsStableAndDiffFindsChanges(t *testing.T) {
	var a, b bytes.Buffer
	if err := Pack(source, &a); err != nil {
		t.Fatal(err)
	}
	if err := Pack(source, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two packs of the same chart differ")
	}

	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(source)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "values.yaml"), []byte("changed: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "new.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "values-dev.yaml")); err != nil {
		t.Fatal(err)
	}
	diff, err := Diff(dir, a.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"missing: templates/new.yaml", "changed: values.yaml", "extra: values-dev.yaml"}
	if !slices.Equal(diff, want) {
		t.Fatalf("Diff = %v; want %v", diff, want)
	}
}
