package soak

import (
	"bytes"
	"os"
	"testing"

	"github.com/openservicemesh/osm/libs/logging"
	"github.com/openservicemesh/osm/tests/kube"
)

var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, true)) }

// TestSoakShort is the CI soak (Short): 2 minutes, 100 proxies over two
// edges, 2-minute certificates, edits throughout, and the faults: the first
// two steps of a root rotation, kill -9 of the compiler mid-burst, kill -9
// of an edge, a NATS restart. It fails when a must-be-0 figure is not 0.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes 2 minutes")
	}
	// The fault tests of this package share the cluster.
	if err := removeMesh(t.Context(), cluster); err != nil {
		t.Fatal(err)
	}
	cfg := Short()
	cfg.Dir = t.TempDir()
	// Every service's output, written by many goroutines at once.
	logs := &logging.Buffer{}
	cfg.Log = logs
	cfg.Progress = testWriter{t}
	rep, err := Run(t.Context(), cluster, cfg)
	if err != nil {
		t.Log(logs.String())
		t.Fatal(err)
	}
	var table bytes.Buffer
	rep.Print(&table)
	t.Log(table.String())
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	if rep.Edits.n < int(cfg.Duration/cfg.EditEvery)/2 {
		t.Errorf("only %d edits made in %s", rep.Edits.n, cfg.Duration)
	}
	if t.Failed() {
		t.Log(logs.String())
	}
}

// testWriter logs each write as a test log line.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

// TestGenOf: versions order by epoch, then generation, with or without an
// epoch and a content hash.
func TestGenOf(t *testing.T) {
	for _, c := range []struct {
		v    string
		want ver
		ok   bool
	}{
		{"12", ver{0, 12}, true},
		{"12.ab34", ver{0, 12}, true},
		{"1796359637760:3", ver{1796359637760, 3}, true},
		{"1796359637760:3.c261fadf", ver{1796359637760, 3}, true},
		{"serial-ab", ver{}, false},
		{"x:3", ver{}, false},
	} {
		got, ok := genOf(c.v)
		if got != c.want || ok != c.ok {
			t.Errorf("genOf(%q) = %v, %v; want %v, %v", c.v, got, ok, c.want, c.ok)
		}
	}
	if !(ver{1, 9}).less(ver{2, 1}) || (ver{2, 1}).less(ver{1, 9}) || !(ver{2, 1}).less(ver{2, 2}) {
		t.Error("ver.less does not order by epoch, then generation")
	}
}
