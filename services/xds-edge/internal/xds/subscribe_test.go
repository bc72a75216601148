package xds

import (
	"context"
	"slices"
	"sort"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// rawDelta is a delta ADS stream driven request by request.
type rawDelta struct {
	t   *testing.T
	st  discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	got chan *discovery.DeltaDiscoveryResponse
}

func (f *fixture) rawDelta(uri string) *rawDelta {
	f.t.Helper()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(f.dial(uri)).DeltaAggregatedResources(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	r := &rawDelta{t: f.t, st: st, got: make(chan *discovery.DeltaDiscoveryResponse, 16)}
	go func() {
		defer close(r.got)
		for {
			resp, err := st.Recv()
			if err != nil {
				return
			}
			r.got <- resp
		}
	}()
	return r
}

func (r *rawDelta) send(req *discovery.DeltaDiscoveryRequest) {
	r.t.Helper()
	if err := r.st.Send(req); err != nil {
		r.t.Fatal(err)
	}
}

// next returns the next response, ACKed, as "name..." and "-removed...".
func (r *rawDelta) next() []string {
	r.t.Helper()
	select {
	case resp, ok := <-r.got:
		if !ok {
			r.t.Fatal("the stream ended")
		}
		var out []string
		for _, res := range resp.GetResources() {
			out = append(out, res.GetName())
		}
		for _, n := range resp.GetRemovedResources() {
			out = append(out, "-"+n)
		}
		sort.Strings(out)
		r.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
		return out
	case <-time.After(5 * time.Second):
		r.t.Fatal("no response within 5s")
		return nil
	}
}

// none checks that no response comes within a short while.
func (r *rawDelta) none() {
	r.t.Helper()
	select {
	case resp := <-r.got:
		r.t.Fatalf("unexpected response: %v removed %v", resp.GetResources(), resp.GetRemovedResources())
	case <-time.After(200 * time.Millisecond):
	}
}

// ids is the number of IDs in the pool, after freeing those no stream
// refers to any longer.
func (f *fixture) ids() int {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	f.srv.pool.Collect()
	return f.srv.pool.IDs()
}

func TestDeltaExplicitSubscriptions(t *testing.T) {
	f := newFixture(t)
	f.seed()
	base := f.ids()
	p := f.rawDelta(spiffe("a"))
	// A name the group does not have yet, one it has, and one outside its
	// view ("out-b" is b's listener name, not a cluster of a's).
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{"later", "ca", "out-b", "ca"}})
	if got := p.next(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("first response %v, want [ca] only", got)
	}
	// The missing name arrives when it is compiled into a's view.
	f.commit(
		res(t, xdstest.Cluster("later", time.Second), "later", 2),
		xdstest.Group("a", "a", 2, map[string][]string{cds: {"ca", "later", "shared"}, eds: {"ca", "shared"}}),
	)
	if got := p.next(); !cmp.Equal(got, []string{"later"}) {
		t.Fatalf("after compiling later: %v", got)
	}
	// Unsubscribed, a name is neither updated nor removed. (The request
	// also subscribes to shared, whose response says it was processed.)
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesUnsubscribe: []string{"ca"}, ResourceNamesSubscribe: []string{"shared"}})
	if got := p.next(); !cmp.Equal(got, []string{"shared"}) {
		t.Fatalf("after subscribing to shared: %v", got)
	}
	f.commit(res(t, xdstest.Cluster("ca", 3*time.Second), "ca", 3), res(t, xdstest.Cluster("later", 3*time.Second), "later", 3))
	if got := p.next(); !cmp.Equal(got, []string{"later"}) {
		t.Fatalf("after unsubscribing ca: %v, want [later]", got)
	}
	// Subscribed again, it is sent again: the proxy dropped it.
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{"ca"}})
	if got := p.next(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("after subscribing to ca again: %v", got)
	}
	// A name that leaves the view is removed, and comes back when it
	// returns: the subscription outlives the resource. A new name nobody
	// subscribed to is not sent.
	f.commit(xdstest.Group("a", "a", 4, map[string][]string{cds: {"ca", "shared"}}))
	if got := p.next(); !cmp.Equal(got, []string{"-later"}) {
		t.Fatalf("after later left a's view: %v", got)
	}
	f.commit(
		res(t, xdstest.Cluster("extra", time.Second), "extra", 5),
		xdstest.Group("a", "a", 5, map[string][]string{cds: {"ca", "extra", "later", "shared"}}),
	)
	if got := p.next(); !cmp.Equal(got, []string{"later"}) {
		t.Fatalf("after later came back: %v", got)
	}
	f.commit(res(t, xdstest.Cluster("extra", 6*time.Second), "extra", 6))
	p.none()
	// Adding the wildcard brings the rest of the view.
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{"*"}})
	if got := p.next(); !cmp.Equal(got, []string{"extra"}) {
		t.Fatalf("after the wildcard: %v", got)
	}
	if err := p.st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitFor(t, "the stream to close", func() bool { return f.srv.Stats().Connected == 0 })
	// later and extra are resources now; the IDs of the names subscribed
	// to that the pool lacks are gone.
	if n := f.ids(); n != base+2 {
		t.Errorf("%d IDs after the stream closed, want %d (the pool's, plus later and extra)", n, base+2)
	}
}

func TestDeltaInitialVersions(t *testing.T) {
	f := newFixture(t)
	f.seed()
	first := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Delta: true, Types: []string{cds}})
	r := xdstest.Next(t, first)
	held := r.Versions
	if len(held) != 2 {
		t.Fatalf("first proxy holds %v", held)
	}
	first.Stop()
	f.commit(res(t, xdstest.Cluster("ca", 7*time.Second), "ca", 2))
	// Reconnecting with what it held, plus a cluster this edge never made:
	// only ca (changed since) is sent, and the unknown one removed.
	initialVersions := map[string]string{"ca": held["ca"], "shared": held["shared"], "gone": "1.0123456789abcdef"}
	p := f.rawDelta(spiffe("a"))
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, InitialResourceVersions: initialVersions})
	var got []string
	for len(got) < 2 {
		got = append(got, p.next()...)
	}
	slices.Sort(got)
	if !cmp.Equal(got, []string{"-gone", "ca"}) {
		t.Fatalf("after reconnecting: %v, want ca updated and gone removed", got)
	}
	p.none()
}

// TestDeltaNackOfANewResource: a proxy that rejects a resource it never
// held keeps holding nothing under that name; the rejected revision is not
// sent again, a newer one is.
func TestDeltaNackOfANewResource(t *testing.T) {
	f := newFixture(t)
	f.seed()
	p := f.rawDelta(spiffe("a"))
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds})
	if got := p.next(); !cmp.Equal(got, []string{"ca", "shared"}) {
		t.Fatalf("initial: %v", got)
	}
	f.commit(
		res(t, xdstest.Cluster("bad", 9*time.Second), "bad", 2),
		xdstest.Group("a", "a", 2, map[string][]string{cds: {"bad", "ca", "shared"}}),
	)
	select {
	case resp := <-p.got:
		if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "bad" {
			t.Fatalf("got %v, want bad", resp.GetResources())
		}
		p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResponseNonce: resp.GetNonce(), ErrorDetail: &status.Status{Message: "bad: rejected"}})
	case <-time.After(5 * time.Second):
		t.Fatal("bad was not sent")
	}
	xdstest.WaitFor(t, "the NACK", func() bool { return f.srv.Stats().Nacks == 1 })
	f.commit(res(t, xdstest.Cluster("ca", 3*time.Second), "ca", 3))
	if got := p.next(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("after the NACK: %v, want ca only", got)
	}
	f.commit(res(t, xdstest.Cluster("bad", 2*time.Second), "bad", 4))
	if got := p.next(); !cmp.Equal(got, []string{"bad"}) {
		t.Fatalf("the fixed cluster: %v", got)
	}
}

// TestSotWExplicitSubscriptions: a state-of-the-world stream gets what it
// names, an ACK that repeats the subscription sends nothing, a new
// subscription replaces the old, and the stream's IDs go with it.
func TestSotWExplicitSubscriptions(t *testing.T) {
	f := newFixture(t)
	f.seed()
	base := f.ids()
	// A response that never comes fails the test rather than hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(f.dial(spiffe("a"))).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var subscription []string
	recv := func() []string {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range resp.GetResources() {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			out = append(out, cla.GetClusterName())
		}
		sort.Strings(out)
		// The ACK repeats the subscription, as Envoy's do.
		if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: subscription, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	subscription = []string{"missing", "ca", "ca"}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: subscription}); err != nil {
		t.Fatal(err)
	}
	if got := recv(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("first response %v, want [ca]", got)
	}
	f.commit(res(t, xdstest.Endpoints("shared", 9191), "shared", 2))
	f.commit(res(t, xdstest.Endpoints("ca", 8181), "ca", 3))
	if got := recv(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("after ca changed: %v (shared's change must not be sent)", got)
	}
	subscription = []string{"shared"}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: subscription}); err != nil {
		t.Fatal(err)
	}
	if got := recv(); !cmp.Equal(got, []string{"shared"}) {
		t.Fatalf("after resubscribing: %v, want [shared]", got)
	}
	// gRPC changes a subscription with the nonce of the newest response,
	// which it has already ACKed: current, not stale.
	f.commit(res(t, xdstest.Endpoints("shared", 9192), "shared", 4))
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: subscription, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	subscription = []string{"shared", "ca"}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: subscription, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if got := recv(); !cmp.Equal(got, []string{"ca", "shared"}) {
		t.Fatalf("after resubscribing with the ACKed newest nonce: %v, want [ca shared]", got)
	}
	// A request carrying an older nonce is stale: its names are ignored.
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: []string{"missing"}, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	f.commit(res(t, xdstest.Endpoints("ca", 8182), "ca", 5))
	if got := recv(); !cmp.Equal(got, []string{"ca", "shared"}) {
		t.Fatalf("after a stale request and a change of ca: %v, want [ca shared] (the stale names ignored)", got)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitFor(t, "the stream to close", func() bool { return f.srv.Stats().Connected == 0 })
	if n := f.ids(); n != base {
		t.Errorf("%d IDs after the stream closed, want %d", n, base)
	}
}

// TestPendingIsBounded: a stream that does not flush for a while notes at
// most maxPending IDs, then looks at everything on its next flush.
func TestPendingIsBounded(t *testing.T) {
	var st typeState
	ids := make([]pool.ID, maxPending)
	for i := range ids {
		ids[i] = pool.ID(i)
	}
	st.notePending(ids...)
	if st.pendingAll || len(st.pending) != maxPending {
		t.Fatalf("after %d IDs: pendingAll %v, %d noted", maxPending, st.pendingAll, len(st.pending))
	}
	st.notePending(1)
	if !st.pendingAll || len(st.pending) != 0 {
		t.Fatalf("past the bound: pendingAll %v, %d noted", st.pendingAll, len(st.pending))
	}
	st.notePending(2)
	if len(st.pending) != 0 {
		t.Fatal("IDs noted while everything is pending")
	}
}

func TestTypeSlotFollowsPushOrder(t *testing.T) {
	for i, typeURL := range pushOrder {
		if got := typeSlot(typeURL); got != i {
			t.Errorf("typeSlot(%s) = %d, want %d", typeURL, got, i)
		}
	}
	if typeSlot("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig") != -1 {
		t.Error("a type the edge does not serve has a slot")
	}
}

func TestInflightForgetsTheOldest(t *testing.T) {
	c := newConn(1, identity.ID{}, true)
	st := c.state(cds)
	var nonces []string
	for range maxInflight + 2 {
		nonces = append(nonces, c.remember(st, sentResponse{}))
	}
	for i, n := range nonces {
		if _, ok := st.take(n); ok != (i >= 2) {
			t.Errorf("nonce %s (response %d): tracked %v", n, i, ok)
		}
	}
	if _, ok := st.take("not-a-nonce"); ok {
		t.Error("a foreign nonce was taken")
	}
}

// TestDeltaReconnectWithVersionsAndNames: an Envoy reconnecting over delta
// names its endpoints both as subscriptions and in its initial versions,
// in one request. It gets only what changed since, and stays subscribed.
func TestDeltaReconnectWithVersionsAndNames(t *testing.T) {
	f := newFixture(t)
	f.seed()
	base := f.ids()
	held := map[string]string{}
	first := f.rawDelta(spiffe("a"))
	first.send(&discovery.DeltaDiscoveryRequest{TypeUrl: eds, ResourceNamesSubscribe: []string{"ca", "shared"}})
	select {
	case resp := <-first.got:
		for _, r := range resp.GetResources() {
			held[r.GetName()] = r.GetVersion()
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no initial response")
	}
	if len(held) != 2 {
		t.Fatalf("first stream holds %v", held)
	}
	if err := first.st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitFor(t, "the first stream to close", func() bool { return f.srv.Stats().Connected == 0 })
	f.commit(res(t, xdstest.Endpoints("ca", 8181), "ca", 2))

	p := f.rawDelta(spiffe("a"))
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: eds, ResourceNamesSubscribe: []string{"ca", "shared"}, InitialResourceVersions: held})
	if got := p.next(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("after reconnecting: %v, want ca only", got)
	}
	p.none()
	// Still subscribed to both.
	f.commit(res(t, xdstest.Endpoints("shared", 9191), "shared", 3))
	if got := p.next(); !cmp.Equal(got, []string{"shared"}) {
		t.Fatalf("after shared changed: %v", got)
	}
	// Initial versions on a later request are ignored.
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: eds, InitialResourceVersions: map[string]string{"ca": "0.bogus"}})
	p.none()
	if err := p.st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitFor(t, "the stream to close", func() bool { return f.srv.Stats().Connected == 0 })
	if n := f.ids(); n != base {
		t.Errorf("%d IDs after the streams closed, want %d", n, base)
	}
}

// TestUnservedTypeIsIgnored: a request for a type the edge does not serve
// gets no answer and takes no IDs; the stream goes on serving the others.
func TestUnservedTypeIsIgnored(t *testing.T) {
	f := newFixture(t)
	f.seed()
	base := f.ids()
	p := f.rawDelta(spiffe("a"))
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", ResourceNamesSubscribe: []string{"ext-1", "ext-2"}})
	p.none()
	if n := f.ids(); n != base {
		t.Errorf("%d IDs after a request for an unserved type, want %d", n, base)
	}
	p.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{"ca"}})
	if got := p.next(); !cmp.Equal(got, []string{"ca"}) {
		t.Fatalf("after the unserved type: %v, want [ca]", got)
	}
}
