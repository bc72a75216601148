package command

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// cluster is the package's kube-apiserver harness (tests/kube); the chart
// installs the CRDs itself.
var cluster *osmkube.Cluster

// testBuilder builds the mesh's services once for every test of the
// package that starts them (startTestMesh, TestConvergence).
var testBuilder *stack.Builder

func TestMain(m *testing.M) {
	flag.Parse()
	bin, err := os.MkdirTemp("", "osm-cli-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBuilder = stack.NewBuilder(bin)
	code := osmkube.MainOptions(m, osmkube.Options{}, &cluster, false)
	os.RemoveAll(bin)
	os.Exit(code)
}

// osm runs the CLI with args against the harness cluster and returns its
// output and error.
func osm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	off := false
	cmd := New(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut, Color: &off})
	cmd.SetArgs(append([]string{"--kubeconfig", cluster.KubeconfigPath()}, args...))
	err := cmd.ExecuteContext(t.Context())
	if errOut.Len() > 0 {
		t.Logf("osm %s: stderr:\n%s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), err
}

// mustOSM is osm that fails the test on an error.
func mustOSM(t *testing.T, args ...string) string {
	t.Helper()
	out, err := osm(t, args...)
	if err != nil {
		t.Fatalf("osm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// golden compares got with testdata/name, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
