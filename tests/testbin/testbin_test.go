package testbin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeModule(t *testing.T, dir, greeting string) {
	t.Helper()
	files := map[string]string{
		"go.mod":            "module example.com/hello\n\ngo 1.26.0\n",
		"cmd/hello/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"" + greeting + "\") }\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildCachesBySource(t *testing.T) {
	src, cache := t.TempDir(), t.TempDir()
	writeModule(t, src, "hello")
	spec := Spec{Name: "hello", Module: "hello", Package: "./cmd/hello", ColdBuild: "seconds"}
	var log bytes.Buffer
	bin, err := Build(t.Context(), spec, Options{SourceDir: src, CacheDir: cache, Output: &log})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin).Output(); err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("built binary printed %q, %v", out, err)
	}
	if !strings.Contains(log.String(), "building hello") {
		t.Fatalf("first build not reported: %q", log.String())
	}

	log.Reset()
	again, err := Build(t.Context(), spec, Options{SourceDir: src, CacheDir: cache, Output: &log})
	if err != nil || again != bin || log.Len() != 0 {
		t.Fatalf("second call: %q, %v, output %q; want the cached %q without a build", again, err, log.String(), bin)
	}

	writeModule(t, src, "bonjour")
	changed, err := Build(t.Context(), spec, Options{SourceDir: src, CacheDir: cache})
	if err != nil || changed == bin {
		t.Fatalf("after a source edit: %q, %v; want a new build", changed, err)
	}
	if out, _ := exec.Command(changed).Output(); strings.TrimSpace(string(out)) != "bonjour" {
		t.Fatalf("rebuilt binary printed %q", out)
	}

	t.Setenv("OSM_HELLO_BIN", bin)
	spec.BinEnv = "OSM_HELLO_BIN"
	if got, err := Build(t.Context(), spec, Options{SourceDir: src, CacheDir: cache}); err != nil || got != bin {
		t.Fatalf("with %s set: %q, %v", spec.BinEnv, got, err)
	}
}
