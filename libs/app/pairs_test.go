package app

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFlagPairNamesTheMissingFlag(t *testing.T) {
	if err := FlagPair("tls-cert-file", "", "tls-key-file", ""); err != nil {
		t.Errorf("neither set: %v", err)
	}
	if err := FlagPair("tls-cert-file", "c", "tls-key-file", "k"); err != nil {
		t.Errorf("both set: %v", err)
	}
	if err := FlagPair("tls-cert-file", "c", "tls-key-file", ""); err == nil || !strings.HasPrefix(err.Error(), "--tls-key-file (OSM_TLS_KEY_FILE): is required with --tls-cert-file") {
		t.Errorf("key missing: %v", err)
	}
	if err := FlagPair("tls-cert-file", "", "tls-key-file", "k"); err == nil || !strings.HasPrefix(err.Error(), "--tls-cert-file") {
		t.Errorf("cert missing: %v", err)
	}
}

func TestFlagFilesNamesTheUnreadableFile(t *testing.T) {
	ok := filepath.Join(t.TempDir(), "ok")
	if err := os.WriteFile(ok, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := FlagFiles("a", ok, "b", ""); err != nil {
		t.Errorf("readable and empty: %v", err)
	}
	if err := FlagFiles("a", ok, "b", "/does/not/exist"); err == nil || !strings.Contains(err.Error(), "--b (OSM_B)") {
		t.Errorf("missing file: %v", err)
	}
}

func TestCheckKVReplicas(t *testing.T) {
	for n, ok := range map[int]bool{0: false, 1: true, 3: true, 5: true, 6: false} {
		if err := CheckKVReplicas(n); (err == nil) != ok {
			t.Errorf("%d: %v", n, err)
		}
	}
}

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{"": nil, " , ,": nil, "a": {"a"}, " a, b ,,c ": {"a", "b", "c"}} {
		if got := SplitList(in); !slices.Equal(got, want) {
			t.Errorf("SplitList(%q) = %q, want %q", in, got, want)
		}
	}
}
