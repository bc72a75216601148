package edge

import (
	"net/http"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestDebugEdgeStatus: GET /v1/edge gives the applied generation with no
// proxy connected (the proxy list has none to carry it), follows a commit,
// and answers only the operator.
func TestDebugEdgeStatus(t *testing.T) {
	m := seededMesh(t, "")
	_, addr := m.startDebugEdge("edge-1")
	op := debugClient(t, m.pki, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String())
	var st edgedebug.EdgeStatus
	if code, body := get(t, op, addr, edgedebug.PathEdge, &st); code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", edgedebug.PathEdge, code, body)
	}
	if st != (edgedebug.EdgeStatus{Edge: "edge-1", Generation: "1", Number: 1}) {
		t.Fatalf("GET %s: %+v; want edge-1 at generation 1", edgedebug.PathEdge, st)
	}
	m.commit(m.res(xdstest.Cluster("shared", 0), "shared"))
	xdstest.WaitFor(t, "the edge at generation 2", func() bool {
		get(t, op, addr, edgedebug.PathEdge, &st)
		return st.Number == 2 && st.Generation == "2"
	})
	if code, _ := get(t, debugClient(t, m.pki, m.pki, spiffe("a")), addr, edgedebug.PathEdge, nil); code != http.StatusForbidden {
		t.Errorf("GET %s with a workload certificate: %d; want 403", edgedebug.PathEdge, code)
	}
}

// TestDebugObserved: GET /v1/observed gives an object's latest entry in
// mesh-observed, read with the edge's own NATS role: its revision, stored
// time, the watcher's headers and the object's metadata; a delete marker
// says deleted; an object never written, a bad kind, and a caller that is
// not the operator are refused.
func TestDebugObserved(t *testing.T) {
	m := seededMesh(t, "")
	_, addr := m.startDebugEdge("edge-1")
	op := debugClient(t, m.pki, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String())
	ctx := t.Context()
	var entry edgedebug.ObservedEntry
	path := edgedebug.ObservedPath(layout.KindTrafficSplit, "book.store", "split")
	// The bucket does not exist yet: the edge does not wait for it.
	if code, body := get(t, op, addr, path, &entry); code != http.StatusBadGateway {
		t.Fatalf("GET %s before mesh-observed exists: %d %s; want 502", path, code, body)
	}
	observed, err := m.conn(bus.RoleAdmin).EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	received := time.Date(2026, 12, 4, 12, 0, 0, 123456789, time.UTC)
	wctx := bus.WithHeader(bus.WithHeader(ctx, layout.HeaderWatcherEpoch, "3"), layout.HeaderEventTime, received.Format(time.RFC3339Nano))
	split := &meshv1.TrafficSplit{Meta: &meshv1.ObjectMeta{Namespace: "book.store", Name: "split", Uid: "u-1", Generation: 4}}
	rev, err := observed.Put(wctx, layout.ObservedKey(layout.KindTrafficSplit, "book.store", "split"), split)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, op, addr, path, &entry); code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if entry.Revision != rev || entry.Key != "trafficsplit.book_2Estore.split" || entry.WatcherEpoch != 3 || entry.EventReceived == nil || !entry.EventReceived.Equal(received) ||
		entry.UID != "u-1" || entry.ObjectGeneration != 4 || entry.Deleted || entry.Stored.IsZero() || entry.Edge != "edge-1" {
		t.Fatalf("GET %s: %+v; want revision %d of epoch 3, received at %s, uid u-1, generation 4", path, entry, rev, received)
	}
	if err := observed.Delete(ctx, layout.ObservedKey(layout.KindTrafficSplit, "book.store", "split")); err != nil {
		t.Fatal(err)
	}
	entry = edgedebug.ObservedEntry{}
	if code, body := get(t, op, addr, path, &entry); code != http.StatusOK || !entry.Deleted || entry.Revision <= rev || entry.UID != "" {
		t.Fatalf("GET %s after the delete: %d %s %+v; want a newer delete marker", path, code, body, entry)
	}
	for p, want := range map[string]int{
		edgedebug.ObservedPath(layout.KindService, "book.store", "none"): http.StatusNotFound,
		edgedebug.ObservedPath("deployment", "book.store", "split"):      http.StatusBadRequest,
		edgedebug.ObservedPath(layout.KindService, "", "split"):          http.StatusBadRequest,
	} {
		if code, body := get(t, op, addr, p, nil); code != want {
			t.Errorf("GET %s: %d %s; want %d", p, code, body, want)
		}
	}
	if code, _ := get(t, debugClient(t, m.pki, m.pki, spiffe("a")), addr, path, nil); code != http.StatusForbidden {
		t.Errorf("GET %s with a workload certificate: %d; want 403", path, code)
	}
}
