package scale

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/logging"
	"github.com/openservicemesh/osm/tests/kube"
)

var cluster *kube.Cluster

// TestMain runs the proxies' fleet when the harness starts this binary as
// its fleet (EnvFleet set), and the tests against one cluster otherwise.
func TestMain(m *testing.M) {
	if root := os.Getenv(EnvFleet); root != "" {
		if err := RunFleet(context.Background(), root, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("fleet: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(kube.MainOptions(m, kube.Options{Args: ClusterArgs()}, &cluster, true))
}

// smallLimits are the CI size's loose bounds, on the last affected proxy's
// ACK of each edit: a regression by an order of magnitude fails them, a
// busy shared 2-core machine does not (the full-size goals are 1-5 s).
var smallLimits = map[EditKind]time.Duration{
	PodNotReady: 10 * time.Second,
	SplitWeight: 10 * time.Second,
	NewTarget:   10 * time.Second,
	ServicePort: 10 * time.Second,
	NamespaceIn: 20 * time.Second,
}

// TestScaleSmall is the scale harness at the CI size (Small: 1k Services,
// 2k pods, 1k proxies, one edge): every edit reaches every affected proxy,
// every stage is seen in order, and the last ACK of each edit is within
// smallLimits.
func TestScaleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale harness takes about 2 minutes")
	}
	cfg := Small()
	cfg.Dir = t.TempDir()
	cfg.FleetCommand = []string{os.Args[0]}
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
	t.Log("\n" + table.String())
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	if got, want := len(rep.Edits), len(EditKinds())*cfg.Repeat; got != want {
		t.Errorf("%d edits made, want %d", got, want)
	}
	for _, e := range rep.Edits {
		if lim := smallLimits[e.Kind]; e.Last() > lim {
			t.Errorf("%s (%s): last proxy ACKed %s after the apply, over the regression bound %s", e.Kind, e.What, e.Last(), lim)
		}
		// The stages come in pipeline order (the edge's log time has
		// millisecond resolution; the watcher's write may come before the
		// apiserver's answer reached the harness, so it may be negative).
		if e.Watcher > e.Compiler || e.Compiler > e.LastEdge()+time.Millisecond || e.LastEdge() > e.Last()+time.Millisecond {
			t.Errorf("%s (%s): stages out of order: EndpointSlice %s, watcher %s, compiler %s, edge %s, last ACK %s", e.Kind, e.What, e.Slice, e.Watcher, e.Compiler, e.LastEdge(), e.Last())
		}
	}
	png := filepath.Join(t.TempDir(), "timeline.png")
	if err := rep.Plot(png); err != nil {
		t.Error(err)
	} else if b, err := os.ReadFile(png); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Errorf("plot %s: %d bytes, %v", png, len(b), err)
	}
	if len(rep.PeakRSS) < 6 {
		t.Errorf("peak RSS of %d processes, want the apiserver's, NATS, the services' and the proxies': %v", len(rep.PeakRSS), rep.PeakRSS)
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
