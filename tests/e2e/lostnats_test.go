package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/tests/stack"
)

// generationOf reads the (epoch, number) an xDS version names: the prefix
// "<epoch>:<number>" or "<number>" (epoch 0) before the first dot.
func generationOf(t *testing.T, version string) [2]uint64 {
	t.Helper()
	head, _, ok := strings.Cut(version, ".")
	if !ok {
		t.Fatalf("version %q names no generation", version)
	}
	var g [2]uint64
	num := head
	if e, n, found := strings.Cut(head, ":"); found {
		var err error
		if g[0], err = strconv.ParseUint(e, 10, 64); err != nil {
			t.Fatalf("version %q: %v", version, err)
		}
		num = n
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		t.Fatalf("version %q: %v", version, err)
	}
	g[1] = n
	return g
}

func before(a, b [2]uint64) bool { return a[0] < b[0] || (a[0] == b[0] && a[1] < b[1]) }

// TestLostMeshCompiled (issue 15, item 2) runs the control plane as
// processes, with a proxy (libs/xdstest's ADS client, which shows the
// versions it is served) connected, and loses KV mesh-compiled twice:
//   - the compiler is stopped, the bucket deleted, and the compiler started
//     again on the empty bucket it declares: it starts a new epoch, which
//     the running edge takes as newer although its numbers start again at
//     1 (today's compiler numbers from 1 and the edge ignores everything
//     until the numbers catch up: the next edit never reaches the proxy);
//   - the bucket is deleted under the running compiler, and nothing changes
//     for a while: the compiler notices by itself and rewrites the bucket
//     under a new epoch.
//
// After each loss the next edit (a pod becoming ready) reaches the proxy,
// whose versions never go back; and a proxy that reconnects, to a
// restarted edge, with the version it held from before the losses is
// served, not refused as if it had seen newer state.
func TestLostMeshCompiled(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "lost-store"+run, "lost-buyer"+run, "lost"+run, "lost-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "lost-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.1")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.10.1")

	m := startMesh(t, stack.Options{Name: "lost", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	buyer := identityOf(buyerNS, "bookbuyer")
	proxyCert, err := m.WorkloadCert(ctx, buyer, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(proxyCert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	node := nodeOf("bookbuyer-1-uuid", "bookbuyer", buyerNS)
	store := storeNS + "/bookstore|14001"
	eds := xdstest.RunProxy(t, cc, xdstest.ProxyOptions{NodeID: node.GetId(), Types: []string{typeEDS}})
	var last [2]uint64
	ips := []string{"10.244.9.1"}
	// waitEndpoints reads the proxy's responses until it has every pod's
	// endpoint, checking that no version goes back.
	waitEndpoints := func(since time.Time, what string) {
		t.Helper()
		for {
			resp := xdstest.Next(t, eds)
			g := generationOf(t, resp.Version)
			if before(g, last) {
				t.Errorf("version went back from %v to %v (%s)", last, g, resp.Version)
			}
			last = g
			got := endpoints(unpack(t, slices.Collect(maps.Values(resp.Resources))), store)
			if strings.Join(got, ",") == strings.Join(ips, ",") {
				t.Logf("%s: the endpoint reached the proxy %s after it (generation %v)", what, time.Since(since).Round(time.Millisecond), g)
				return
			}
		}
	}
	waitEndpoints(time.Now(), "start")
	pod := func(n int) {
		ip := fmt.Sprintf("10.244.9.%d", n)
		readyPod(t, kubelet, storeNS, fmt.Sprintf("bookstore-%d", n), "bookstore", "bookstore", ip)
		ips = append(ips, ip)
	}
	for n := 2; n <= 4; n++ { // the first epoch's numbers run up
		pod(n)
		waitEndpoints(time.Now(), "an edit")
	}
	held, first := eds.Version(typeEDS), last

	// The compiler restarts on an empty mesh-compiled.
	stop(t, m, stack.Compiler)
	if err := m.NATS().Admin().JetStream().DeleteKeyValue(ctx, bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	if err := m.Restart(ctx, stack.Compiler); err != nil {
		t.Fatal(err)
	}
	edit := time.Now()
	pod(5)
	waitEndpoints(edit, "compiler restarted on an empty mesh-compiled, then a pod ready")
	if last[0] <= first[0] {
		t.Errorf("after the loss the proxy is at %v, want a newer epoch than %v", last, first)
	}

	// The bucket is deleted under the running compiler; nothing changes.
	if err := m.NATS().Admin().JetStream().DeleteKeyValue(ctx, bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	lost, second := time.Now(), last
	waitEndpoints(lost, "mesh-compiled deleted under the running compiler, no edit: the rewrite")
	if last[0] <= second[0] {
		t.Errorf("after the second loss the proxy is at %v, want a newer epoch than %v", last, second)
	}
	edit = time.Now()
	pod(6)
	waitEndpoints(edit, "then a pod ready")

	// The edge restarts; a proxy reconnects with the version it held before
	// the losses, of a higher number than the edge's.
	if err := m.Restart(ctx, stack.Edge); err != nil {
		t.Fatal(err)
	}
	cc2, err := m.DialEdge(proxyCert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	p := xdstest.RunProxy(t, cc2, xdstest.ProxyOptions{NodeID: node.GetId(), Types: []string{typeEDS}, Versions: map[string]string{typeEDS: held}})
	r := xdstest.Next(t, p)
	if g := generationOf(t, r.Version); before(g, last) {
		t.Errorf("the reconnected proxy got generation %v, before %v", g, last)
	}
	t.Logf("a proxy holding %s from before the losses reconnected to a restarted edge and got %s", held, r.Version)
}
