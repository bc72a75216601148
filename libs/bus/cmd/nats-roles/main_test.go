package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openservicemesh/osm/libs/bus"
)

// TestRenderHasEveryRole: every role of bus.Roles is in the file with the
// allow-lists of bus.PermissionsFor (admin unrestricted, as null).
func TestRenderHasEveryRole(t *testing.T) {
	b, err := render()
	if err != nil {
		t.Fatal(err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Roles) != len(bus.Roles()) {
		t.Fatalf("rendered %d roles, want %d", len(f.Roles), len(bus.Roles()))
	}
	for _, r := range bus.Roles() {
		want, _ := bus.PermissionsFor(r)
		got, ok := f.Roles[string(r)]
		if !ok {
			t.Fatalf("role %s missing", r)
		}
		if (want == nil) != (got == nil) {
			t.Fatalf("role %s: got %v, want %v", r, got, want)
		}
		if want != nil && (strings.Join(got.Publish, " ") != strings.Join(want.Publish, " ") ||
			strings.Join(got.Subscribe, " ") != strings.Join(want.Subscribe, " ")) {
			t.Errorf("role %s: got %+v, want %+v", r, got, want)
		}
	}
}

// TestCheck: -check passes on a current file and fails on a stale one.
func TestCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "roles.json")
	if err := run([]string{"-o", p}, nil); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-o", p, "-check"}, nil); err != nil {
		t.Fatalf("check of a current file: %v", err)
	}
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "KV_mesh-trust", "KV_mesh-other", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-o", p, "-check"}, nil); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("check of a stale file: %v, want a stale error", err)
	}
}

// TestChartFileIsCurrent: the chart's copy is what render gives (the same
// check as `make nats-roles-check`, so `go test` catches it too).
func TestChartFileIsCurrent(t *testing.T) {
	p := filepath.Join("..", "..", "..", "..", "deploy", "charts", "osm", "charts", "nats", "files", "roles.json")
	if err := run([]string{"-o", p, "-check"}, nil); err != nil {
		t.Fatal(err)
	}
}
