package command

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/xdstest"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// convergenceProxies is how many simulated bookbuyer proxies
// TestConvergence connects.
const convergenceProxies = 1000

// TestConvergence: after a TrafficSplit edit, osm convergence --watch
// (started before the edit) lists every one of 1,000 simulated proxies on
// the edge, each ACKed, with a p99 and a maximum consistent with the
// edge's own osm_xds_push_ack_latency_seconds over the edit; --generation
// shows the same generation, in table form with a row per proxy.
func TestConvergence(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()
	const cpNS, mesh, mcName, appNS = "osm-convtest", "convtest", "convtest-mesh-config", "convtest-app"
	// The chart's CRDs, removed again at the end: the install test
	// expects a cluster without them.
	withChartCRDs(t)
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cpNS}}, metav1.CreateOptions{}))
	mustCreate(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS, Labels: map[string]string{layout.LabelMonitoredBy: mesh}}}, metav1.CreateOptions{}))
	// Out of every mesh again at the end: the install test lists the
	// meshed namespaces.
	t.Cleanup(func() {
		unlabel := []byte(`{"metadata":{"labels":{"` + layout.LabelMonitoredBy + `":null}}}`)
		if _, err := cs.CoreV1().Namespaces().Patch(context.Background(), appNS, types.MergePatchType, unlabel, metav1.PatchOptions{}); err != nil {
			t.Errorf("take %s out of the mesh: %v", appNS, err)
		}
	})
	mustCreate(cs.CoreV1().ServiceAccounts(cpNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "osm-operator"}}, metav1.CreateOptions{}))
	mustCreate(cluster.Dynamic().Resource(osmkube.MeshConfigs).Namespace(cpNS).Create(ctx, unstructuredMeshConfig(mcName), metav1.CreateOptions{}))
	for _, svc := range []string{"bookstore", "bookstore-v1", "bookstore-v2"} {
		mustCreate(cs.CoreV1().Services(appNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bookstore"}, Ports: []corev1.ServicePort{{
				Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: ptrTo("http")}}},
		}, metav1.CreateOptions{}))
	}
	split := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "bookstore-split", "namespace": appNS},
		"spec": map[string]any{"service": "bookstore", "backends": []any{
			map[string]any{"service": "bookstore-v1", "weight": int64(50)}, map[string]any{"service": "bookstore-v2", "weight": int64(50)}}},
	}}
	mustCreate(cluster.Dynamic().Resource(osmkube.TrafficSplits).Namespace(appNS).Create(ctx, split, metav1.CreateOptions{}))
	kubelet := cluster.Kubelet("convtest-node", "zone-a")
	if _, err := kubelet.Register(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, sa, uuid, ip string }{
		{"conv-buyer-1", "bookbuyer", "conv-0000", "10.244.8.10"},
		{"store-1", "bookstore", "conv-store", "10.244.8.11"},
	} {
		mustCreate(cs.CoreV1().ServiceAccounts(appNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: p.sa}}, metav1.CreateOptions{}))
		pod, err := cs.CoreV1().Pods(appNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: map[string]string{"app": p.sa, layout.LabelProxyUUID: p.uuid}},
			Spec: corev1.PodSpec{ServiceAccountName: p.sa, Containers: []corev1.Container{{Name: "app", Image: "app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubelet.MakeReady(ctx, pod, p.ip); err != nil {
			t.Fatal(err)
		}
	}

	debugAddr, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := stack.New(ctx, stack.Options{
		Cluster: cluster, Dir: dir, Builder: testBuilder, Name: "convtest", MeshName: mesh, Namespace: cpNS, MeshConfig: mcName,
		// All 1,000 streams admitted at once: the simulated proxies do not
		// retry a refused one.
		Flags: map[stack.Component][]string{stack.Edge: {"--debug-addr", debugAddr, "--stream-rate", "2000", "--stream-burst", "2000"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Errorf("stop the mesh: %v", err)
		}
		if t.Failed() {
			t.Log(m.Logs())
		}
	}()
	if err := m.Start(ctx, stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge); err != nil {
		t.Fatal(err)
	}
	t.Logf("mesh ready after %s", time.Since(start).Round(time.Millisecond))

	// 1,000 bookbuyer proxies, 10 streams on each of 100 connections (the
	// edge allows 16 a connection).
	issued, err := m.WorkloadCert(ctx, identity.New(stack.TrustDomain, appNS, "bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for c := range convergenceProxies / 10 {
		cc, err := m.DialEdge(issued.Pair)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		for i := range 10 {
			node := fmt.Sprintf("conv-%04d", c*10+i)
			nodes[node] = true
			xdstest.RunProxy(t, cc, xdstest.ProxyOptions{NodeID: node, Types: []string{typeCDS, typeEDS, typeLDS, typeRDS, typeSDS}})
		}
	}
	roots := filepath.Join(dir, "osm-roots.pem")
	if err := os.WriteFile(roots, caclient.RootsPEM(m.Bundle()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctxFile := filepath.Join(dir, "osm-context.json")
	if err := osmctx.Write(ctxFile, &osmctx.File{
		Kubeconfig: cluster.KubeconfigPath(), Namespace: cpNS, CARootsFile: roots,
		CertAuthority: osmctx.Endpoint{Addr: m.Addr(stack.CertAuthority), ServerName: m.CAServerName()},
		Edges:         []osmctx.Endpoint{{Name: "convtest-edge-0", Addr: debugAddr}},
	}); err != nil {
		t.Fatal(err)
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := osm(t, append([]string{"--osm-context", ctxFile}, args...)...)
		if err != nil {
			t.Fatalf("osm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	xdstest.WaitFor(t, "1,000 proxies synced", func() bool {
		var rows []proxyRow
		if err := json.Unmarshal([]byte(must("proxy", "list", "-o", "json")), &rows); err != nil {
			t.Fatal(err)
		}
		synced := 0
		for _, r := range rows {
			if r.Synced {
				synced++
			}
		}
		if synced != convergenceProxies {
			t.Logf("%d of %d proxies listed, %d synced", len(rows), convergenceProxies, synced)
		}
		return synced == convergenceProxies
	})
	t.Logf("%d proxies synced after %s", convergenceProxies, time.Since(start).Round(time.Millisecond))
	before := ackLatency(t, m.AdminAddr(stack.Edge))

	// The watch starts first, then the edit: 90/10.
	type result struct {
		out string
		err error
	}
	watched := make(chan result, 1)
	go func() {
		out, err := osm(t, "--osm-context", ctxFile, "convergence", "--watch", "--timeout", "60s", "-o", "json")
		watched <- result{out, err}
	}()
	time.Sleep(2 * time.Second) // the watch reads the newest generation first
	patch := `{"spec":{"backends":[{"service":"bookstore-v1","weight":90},{"service":"bookstore-v2","weight":10}]}}`
	if _, err := cluster.Dynamic().Resource(osmkube.TrafficSplits).Namespace(appNS).Patch(ctx, "bookstore-split", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	edited := time.Now()
	res := <-watched
	if res.err != nil {
		t.Fatalf("osm convergence --watch: %v\n%s", res.err, res.out)
	}
	var rep convergenceReport
	if err := json.Unmarshal([]byte(res.out), &rep); err != nil {
		t.Fatalf("convergence -o json: %v\n%s", err, res.out)
	}
	t.Logf("generation %s: %d proxies, p50 %s p99 %s max %s, edge commit +%s; printed %s after the edit",
		rep.Generation, len(rep.Proxies), rep.P50, rep.P99, rep.Max, rep.Edges[0].Delay, time.Since(edited).Round(time.Millisecond))
	if len(rep.Proxies) != convergenceProxies || rep.Affected != convergenceProxies || rep.Acked != convergenceProxies || rep.Pending != 0 || rep.Nacked != 0 {
		t.Fatalf("convergence of generation %s: %d proxies listed, %d affected, %d acked, %d pending, %d nacked; want all %d ACKed",
			rep.Generation, len(rep.Proxies), rep.Affected, rep.Acked, rep.Pending, rep.Nacked, convergenceProxies)
	}
	for _, p := range rep.Proxies {
		if !nodes[p.NodeID] || p.Ack == nil || p.Edge != "convtest-edge-0" || p.Identity != identity.New(stack.TrustDomain, appNS, "bookbuyer").String() {
			t.Fatalf("proxy %+v: not one of the simulated bookbuyer proxies, or not ACKed", p)
		}
		delete(nodes, p.NodeID)
	}
	if rep.Proxies[0].Pod != appNS+"/conv-buyer-1" {
		t.Errorf("proxy conv-0000's pod: %q; want %s/conv-buyer-1", rep.Proxies[0].Pod, appNS)
	}
	if rep.CompilerCommit.Before(edited.Add(-time.Second)) || rep.P50 > rep.P99 || rep.P99 > rep.Max || rep.P50 <= 0 {
		t.Errorf("timeline: compiled %s (edit at %s), p50 %s p99 %s max %s", rep.CompilerCommit, edited, rep.P50, rep.P99, rep.Max)
	}

	// The edge's own figure: its histogram's samples over the edit. Every
	// proxy's last ACK is one of them, so the maximum falls in the highest
	// bucket that gained samples, and at least 1% of the proxies' ACKs lie
	// in buckets reaching p99.
	after := ackLatency(t, m.AdminAddr(stack.Edge))
	var samples, reaching uint64
	top := -1
	for i := range after.bounds {
		n := after.counts[i] - before.count(after.bounds[i])
		if n > 0 {
			top = i
		}
		if after.bounds[i] >= rep.P99.Seconds() {
			reaching += n
		}
		samples += n
	}
	if samples < convergenceProxies || top < 0 {
		t.Fatalf("the edge's histogram gained %d ACKs over the edit; want at least %d", samples, convergenceProxies)
	}
	low := 0.0
	if top > 0 {
		low = after.bounds[top-1]
	}
	if s := rep.Max.Seconds(); s > after.bounds[top] || s <= low {
		t.Errorf("max %s outside the edge's highest bucket (%g, %g] s", rep.Max, low, after.bounds[top])
	}
	if reaching*100 < convergenceProxies {
		t.Errorf("only %d of the edge's %d ACK latencies reach p99 %s's bucket; want at least 1%% of %d", reaching, samples, rep.P99, convergenceProxies)
	}
	t.Logf("edge histogram over the edit: %d ACKs, highest bucket (%g, %g] s", samples, low, after.bounds[top])

	// --generation: the same generation, in table form a row per proxy.
	table := must("convergence", "--generation", strconv.FormatUint(rep.Number, 10))
	if got := strings.Count(table, "bookbuyer"); got != convergenceProxies {
		t.Errorf("convergence table: %d proxy rows; want %d:\n%.2000s", got, convergenceProxies, table)
	}
	flat := strings.Join(strings.Fields(table), " ")
	for _, want := range []string{"GENERATION " + rep.Generation, "PROXIES 1000 affected, 1000 ACKed, 0 NACKed, 0 pending", "EDGE COMMIT convtest-edge-0", "STRAGGLERS", appNS + "/conv-buyer-1"} {
		if !strings.Contains(flat, want) {
			t.Errorf("convergence table lacks %q:\n%.2000s", want, table)
		}
	}
	if out := must("convergence", "-o", "yaml", "--generation", strconv.FormatUint(rep.Number, 10)); !strings.Contains(out, "generation: \""+rep.Generation+"\"") {
		t.Errorf("convergence -o yaml:\n%.1000s", out)
	}
	if _, err := osm(t, "--osm-context", ctxFile, "convergence", "--generation", "999999"); err == nil || !strings.Contains(err.Error(), "no xds-edge remembers generation 999999") {
		t.Errorf("convergence --generation 999999: %v; want no edge remembers it", err)
	}
	if _, err := osm(t, "--osm-context", ctxFile, "convergence", "--epoch", "1"); err == nil || !strings.Contains(err.Error(), "give --generation too") {
		t.Errorf("convergence --epoch alone: %v; want --generation asked for", err)
	}
	convergenceByObject(t, ctx, ctxFile, appNS, cpNS, rep, edited)
	t.Logf("TestConvergence took %s", time.Since(start).Round(time.Millisecond))
}

// histogram is the edge's osm_xds_push_ack_latency_seconds, all types
// summed: cumulative counts by upper bound (the last +Inf).
type histogram struct {
	bounds []float64
	counts []uint64
}

// count is the count of the bucket bounded by b; 0 when h has none (no
// sample yet).
func (h histogram) count(b float64) uint64 {
	if i := slices.Index(h.bounds, b); i >= 0 {
		return h.counts[i]
	}
	return 0
}

// ackLatency reads the histogram from the edge's admin /metrics.
func ackLatency(t *testing.T, admin string) histogram {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	byBound := map[float64]uint64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "osm_xds_push_ack_latency_seconds_bucket{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			t.Fatalf("metrics line %q", line)
		}
		le := line[i+4:]
		le = le[:strings.IndexByte(le, '"')]
		b := math.Inf(1)
		if le != "+Inf" {
			if b, err = strconv.ParseFloat(le, 64); err != nil {
				t.Fatal(err)
			}
		}
		n, err := strconv.ParseFloat(line[j+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		byBound[b] += uint64(n)
	}
	var h histogram
	for b := range byBound {
		h.bounds = append(h.bounds, b)
	}
	slices.Sort(h.bounds)
	var prev uint64
	for _, b := range h.bounds {
		// Buckets are cumulative; keep each bucket's own count.
		h.counts = append(h.counts, byBound[b]-prev)
		prev = byBound[b]
	}
	if len(h.bounds) == 0 {
		h.bounds, h.counts = []float64{math.Inf(1)}, []uint64{0}
	}
	return h
}

// TestConvergenceTable: the table form, golden, from fixed answers of two
// edges: a straggler still pending, a NACK.
func TestConvergenceTable(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	ack := func(d time.Duration) *time.Time { a := at.Add(d); return &a }
	sum := func(edge string, commit time.Duration, affected, acked, nacked int) edgedebug.GenerationSummary {
		return edgedebug.GenerationSummary{Generation: "1796415868617:42", Epoch: 1796415868617, Number: 42, CompilerCommit: at, EdgeCommit: at.Add(commit),
			ObservedRevision: 1207, Affected: affected, Acked: acked, Nacked: nacked}
	}
	bb, bs := "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer", "spiffe://cluster.local/ns/bookstore/sa/bookstore"
	rep := mergeConvergence([]*edgedebug.GenerationConvergence{
		{Edge: "osm-xds-edge-7c9d-x2x4z", GenerationSummary: sum("x2x4z", 3*time.Millisecond, 2, 2, 0), Proxies: []edgedebug.ProxyConvergence{
			{NodeID: "1b9c", Identity: bb, Ack: ack(41 * time.Millisecond), Latency: 41 * time.Millisecond},
			{NodeID: "2c0d", Identity: bb, Ack: ack(38 * time.Millisecond), Latency: 38 * time.Millisecond},
		}},
		{Edge: "osm-xds-edge-7c9d-k8p2q", GenerationSummary: sum("k8p2q", 5*time.Millisecond, 2, 1, 1), Proxies: []edgedebug.ProxyConvergence{
			{NodeID: "77aa", Identity: bs, Ack: ack(52 * time.Millisecond), Latency: 52 * time.Millisecond,
				Nack: &edgedebug.Nack{Type: "rds", Version: "1796415868617:42", Message: "route bookstore: unknown cluster", Time: at.Add(30 * time.Millisecond)}},
			{NodeID: "c0ffee", Identity: bb},
		}},
	})
	rep.Proxies[0].Pod = "bookbuyer/bookbuyer-5f7b"
	var b strings.Builder
	if err := printConvergence(&b, "table", rep); err != nil {
		t.Fatal(err)
	}
	golden(t, "convergence.txt", b.String())
	if rep.P50 != 41*time.Millisecond || rep.P99 != 52*time.Millisecond || rep.Pending != 1 || strings.Join(rep.Stragglers, ",") != "c0ffee" {
		t.Errorf("p50 %s p99 %s pending %d stragglers %v; want 41ms, 52ms, 1, c0ffee", rep.P50, rep.P99, rep.Pending, rep.Stragglers)
	}
}

// convergenceByObject, in TestConvergence after the TrafficSplit edit
// whose generation rep is: osm convergence OBJECT names the generation
// whose observed revision first covers the object's write, with the same
// proxies and p99 as --generation; after a later change of another object
// (a Service, followed with --watch OBJECT) the TrafficSplit, unchanged
// since, still names its own; a missing object, one out of the mesh and
// an unknown kind fail naming it.
func convergenceByObject(t *testing.T, ctx context.Context, ctxFile, appNS, cpNS string, rep convergenceReport, edited time.Time) {
	t.Helper()
	run := func(args ...string) (objectReport, string) {
		t.Helper()
		out, err := osm(t, append([]string{"--osm-context", ctxFile, "convergence", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("osm convergence %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		var o objectReport
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("osm convergence %s -o json: %v\n%.2000s", strings.Join(args, " "), err, out)
		}
		return o, out
	}
	split := "trafficsplit/" + appNS + "/bookstore-split"
	o, _ := run(split)
	c := o.Convergence
	if c == nil || c.Generation != rep.Generation {
		t.Fatalf("osm convergence %s: generation %v; want %s, the edit's", split, c, rep.Generation)
	}
	if o.Observed.Revision == 0 || o.Observed.Revision > c.ObservedRevision || o.Observed.WatcherEpoch == 0 || o.Observed.Deleted {
		t.Errorf("the edit's entry %+v; want a write of a known epoch that generation %s (observed revision %d) covers", o.Observed, c.Generation, c.ObservedRevision)
	}
	if r := o.Observed.EventReceived; r == nil || r.Before(edited.Add(-time.Second)) || o.Observed.Stored.Before(*r) || c.CompilerCommit.Before(o.Observed.Stored) {
		t.Errorf("timeline: event received %v, stored %s, compiled %s (edit at %s)", r, o.Observed.Stored, c.CompilerCommit, edited)
	}
	var stages []string
	for _, s := range o.Timeline {
		stages = append(stages, s.Stage)
	}
	if got, want := strings.Join(stages, ","), "kubernetes write,watcher received,watcher wrote,compiled,edge commit,ACK p50,ACK p99,last ACK"; got != want {
		t.Errorf("stages %s; want %s", got, want)
	}
	var byGen convergenceReport
	if err := json.Unmarshal([]byte(mustOSM(t, "--osm-context", ctxFile, "convergence", "-o", "json", "--generation", strconv.FormatUint(rep.Number, 10))), &byGen); err != nil {
		t.Fatal(err)
	}
	if c.P99 != byGen.P99 || c.Max != byGen.Max || len(c.Proxies) != convergenceProxies || c.Acked != convergenceProxies || c.Proxies[0].Pod != appNS+"/conv-buyer-1" {
		t.Errorf("by object: p99 %s max %s, %d proxies, %d ACKed, first pod %q; --generation %d: p99 %s max %s; want equal, all %d ACKed",
			c.P99, c.Max, len(c.Proxies), c.Acked, c.Proxies[0].Pod, rep.Number, byGen.P99, byGen.Max, convergenceProxies)
	}
	table := mustOSM(t, "--osm-context", ctxFile, "convergence", split)
	flat := strings.Join(strings.Fields(table), " ")
	for _, want := range []string{"OBJECT " + split, "watcher wrote", "GENERATION " + rep.Generation, "PROXIES 1000 affected, 1000 ACKed"} {
		if !strings.Contains(flat, want) {
			t.Errorf("convergence %s table lacks %q:\n%.1500s", split, want, table)
		}
	}

	// A Service's change, followed with --watch from before it: a newer
	// generation; the TrafficSplit, unchanged since, keeps its own.
	type result struct {
		o   objectReport
		err error
		out string
	}
	watched := make(chan result, 1)
	svc := "svc/" + appNS + "/bookstore-v2"
	go func() {
		out, err := osm(t, "--osm-context", ctxFile, "convergence", "--watch", svc, "--timeout", "60s", "-o", "json")
		var o objectReport
		if err == nil {
			err = json.Unmarshal([]byte(out), &o)
		}
		watched <- result{o, err, out}
	}()
	time.Sleep(2 * time.Second) // the watch reads the Service's entry first
	patch := `{"spec":{"ports":[{"name":"http","port":14001,"targetPort":14001,"appProtocol":"tcp"}]}}`
	if _, err := cluster.Clientset().CoreV1().Services(appNS).Patch(ctx, "bookstore-v2", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	res := <-watched
	if res.err != nil {
		t.Fatalf("osm convergence --watch %s: %v\n%.2000s", svc, res.err, res.out)
	}
	sc := res.o.Convergence
	if sc == nil || sc.Epoch == rep.Epoch && sc.Number <= rep.Number || res.o.Object != "service/"+appNS+"/bookstore-v2" || res.o.Observed.Revision > sc.ObservedRevision {
		t.Fatalf("osm convergence --watch %s: %+v; want a generation after %s covering the Service's write", svc, res.o, rep.Generation)
	}
	if o, _ := run(split); o.Convergence.Generation != rep.Generation {
		t.Errorf("osm convergence %s after the Service's change: generation %s; want %s, its last change's", split, o.Convergence.Generation, rep.Generation)
	}
	if o, _ := run(svc); o.Convergence.Generation != sc.Generation {
		t.Errorf("osm convergence %s: generation %s; want %s, the one --watch followed", svc, o.Convergence.Generation, sc.Generation)
	}
	t.Logf("by object: %s in generation %s, %s in %s", split, rep.Generation, svc, sc.Generation)

	for _, tc := range []struct{ arg, want string }{
		{"trafficsplit/" + appNS + "/no-such-split", "trafficsplit/" + appNS + "/no-such-split not found in the Kubernetes API"},
		{"ns/" + cpNS, "namespace/" + cpNS + " is not in the mesh"},
		{"deployment/" + appNS + "/bookstore", `unknown kind "deployment"`},
	} {
		if out, err := osm(t, "--osm-context", ctxFile, "convergence", tc.arg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("osm convergence %s: %v\n%s; want an error saying %q", tc.arg, err, out, tc.want)
		}
	}
}
