package command

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/layout"
)

// TestConvergenceIncluding: the first remembered generation whose observed
// revision reaches the write's, in its observed epoch or a later one; one
// whose predecessor was forgotten may not be the first; none when no
// generation reaches it.
func TestConvergenceIncluding(t *testing.T) {
	gen := func(epoch, number, obsEpoch, rev uint64) edgedebug.GenerationSummary {
		return edgedebug.GenerationSummary{Generation: "g", Epoch: epoch, Number: number, ObservedEpoch: obsEpoch, ObservedRevision: rev}
	}
	window := []edgedebug.GenerationSummary{gen(7, 40, 2, 100), gen(7, 41, 2, 120), gen(7, 42, 2, 130), gen(7, 44, 3, 150)}
	for _, tc := range []struct {
		name       string
		gens       []edgedebug.GenerationSummary
		rev, epoch uint64
		number     uint64
		want       inclusion
	}{
		{"the first reaching it", window, 121, 2, 42, included},
		{"exactly its revision", window, 120, 2, 41, included},
		{"an unchanged object's older write", window, 101, 2, 41, included},
		{"the oldest remembered reaches it", window, 90, 2, 40, beforeWindow},
		{"after a gap in the window", window, 140, 2, 44, beforeWindow},
		{"a later observed epoch compares", window, 125, 1, 42, included},
		{"an earlier observed epoch does not", window, 110, 3, 44, beforeWindow},
		{"not compiled yet", window, 151, 3, 44, notIncluded},
		{"epoch unknown", window, 121, 0, 42, included},
		{"the first of a mesh epoch", []edgedebug.GenerationSummary{gen(8, 1, 4, 10), gen(8, 2, 4, 20)}, 5, 4, 1, included},
		{"nothing remembered", nil, 5, 1, 0, notIncluded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, got := includingGeneration(tc.gens, tc.rev, tc.epoch)
			if got != tc.want || g.Number != tc.number {
				t.Errorf("includingGeneration(revision %d, epoch %d) = generation %d, %d; want %d, %d", tc.rev, tc.epoch, g.Number, got, tc.number, tc.want)
			}
		})
	}
}

// TestConvergenceObjectParse: the spellings of OBJECT, and errors that
// name the object and say what to write.
func TestConvergenceObjectParse(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"trafficsplit/bookstore/bookstore-split", "trafficsplit/bookstore/bookstore-split"},
		{"TrafficSplits/bookstore/bookstore-split", "trafficsplit/bookstore/bookstore-split"},
		{"ts/bookstore/bookstore-split", "trafficsplit/bookstore/bookstore-split"},
		{"po/bookbuyer/bookbuyer-0", "pod/bookbuyer/bookbuyer-0"},
		{"ns/bookstore", "namespace/bookstore"},
		{"meshconfig/osm-mesh-config", "meshconfig/osm-system/osm-mesh-config"},
		{"endpointslices/bookstore/bookstore-x7k", "endpointslice/bookstore/bookstore-x7k"},
		{"retries/bookbuyer/retry-bookstore", "retry/bookbuyer/retry-bookstore"},
		{"Egress/bookbuyer/httpbin", "egress/bookbuyer/httpbin"},
		{"upstreamtrafficsettings/bookstore/limits", "upstreamtrafficsetting/bookstore/limits"},
	} {
		o, err := parseObject(tc.arg, "osm-system")
		if err != nil || o.String() != tc.want {
			t.Errorf("parseObject(%q) = %v, %v; want %s", tc.arg, o, err, tc.want)
		}
	}
	for _, tc := range []struct{ arg, want string }{
		{"deployment/bookstore/bookstore", `object "deployment/bookstore/bookstore": unknown kind "deployment"; osm convergence follows the kinds the mesh watches: pods, services`},
		{"trafficsplit/bookstore-split", `give its namespace, trafficsplit/<namespace>/bookstore-split`},
		{"ns/a/b", `object "ns/a/b": want namespace/NAME`},
		{"svc/bookstore/", `object "svc/bookstore/": an empty name; want service/NAMESPACE/NAME`},
	} {
		if _, err := parseObject(tc.arg, "osm-system"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseObject(%q): %v; want %q", tc.arg, err, tc.want)
		}
	}
}

// TestConvergenceObjectTable: an object's timeline, golden, from fixed
// answers: the Kubernetes write, the watcher's, the compiler's and two
// edges' commits, the ACKs.
func TestConvergenceObjectTable(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	ack := func(d time.Duration) *time.Time { a := at.Add(d); return &a }
	sum := func(commit time.Duration, affected, acked int) edgedebug.GenerationSummary {
		return edgedebug.GenerationSummary{Generation: "1796415868617:42", Epoch: 1796415868617, Number: 42, CompilerCommit: at, EdgeCommit: at.Add(commit),
			ObservedRevision: 1207, ObservedEpoch: 3, Affected: affected, Acked: acked}
	}
	bb := "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"
	rep := mergeConvergence([]*edgedebug.GenerationConvergence{
		{Edge: "osm-xds-edge-7c9d-x2x4z", GenerationSummary: sum(3*time.Millisecond, 1, 1), Proxies: []edgedebug.ProxyConvergence{
			{NodeID: "1b9c", Identity: bb, Ack: ack(41 * time.Millisecond), Latency: 41 * time.Millisecond}}},
		{Edge: "osm-xds-edge-7c9d-k8p2q", GenerationSummary: sum(5*time.Millisecond, 1, 1), Proxies: []edgedebug.ProxyConvergence{
			{NodeID: "2c0d", Identity: bb, Ack: ack(52 * time.Millisecond), Latency: 52 * time.Millisecond}}},
	})
	rep.Proxies[0].Pod = "bookbuyer/bookbuyer-5f7b"
	received := at.Add(-30 * time.Millisecond)
	obj, err := parseObject("trafficsplit/bookstore/bookstore-split", "osm-system")
	if err != nil {
		t.Fatal(err)
	}
	entry := edgedebug.ObservedEntry{Edge: "osm-xds-edge-7c9d-k8p2q", Kind: layout.KindTrafficSplit, Namespace: "bookstore", Name: "bookstore-split",
		Key: "trafficsplit.bookstore.bookstore-split", Revision: 1205, Stored: at.Add(-28 * time.Millisecond), WatcherEpoch: 3, EventReceived: &received,
		UID: "5d3c", ObjectGeneration: 4}
	o := objectTimeline(obj, at.Add(-time.Second).Truncate(time.Second), entry, rep)
	var b strings.Builder
	if err := printObjectConvergence(&b, "table", o); err != nil {
		t.Fatal(err)
	}
	golden(t, "convergence-object.txt", b.String())
	var stages []string
	for _, s := range o.Timeline {
		stages = append(stages, s.Stage)
	}
	if got, want := strings.Join(stages, ","), "kubernetes write,watcher received,watcher wrote,compiled,edge commit,edge commit,ACK p50,ACK p99,last ACK"; got != want {
		t.Errorf("stages %s; want %s", got, want)
	}
	if d := o.Timeline[2].Delay; d == nil || *d != 2*time.Millisecond {
		t.Errorf("watcher wrote's delay %v; want 2ms after it received the event", d)
	}
}

// TestConvergenceHelp: convergence --help, golden.
func TestConvergenceHelp(t *testing.T) {
	golden(t, "help-convergence.txt", mustOSM(t, "convergence", "--help"))
}
