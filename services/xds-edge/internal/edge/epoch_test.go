package edge

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// versions follows what one proxy is served and fails the test when a
// version goes back: a state-of-the-world type's version_info, or a delta
// resource's version, of a generation before one already served.
type versions struct {
	t    *testing.T
	who  string
	p    *xdstest.Proxy
	last map[string]pool.Gen
	// held are the resource versions the proxy holds (delta), by type and
	// name, for a reconnection that presents them.
	held map[string]map[string]string
}

func follow(t *testing.T, who string, p *xdstest.Proxy) *versions {
	return &versions{t: t, who: who, p: p, last: map[string]pool.Gen{}, held: map[string]map[string]string{}}
}

func (v *versions) see(key, version string) {
	g := pool.GenerationOfVersion(version)
	if g == (pool.Gen{}) {
		v.t.Errorf("%s: %s served version %q, which names no generation", v.who, key, version)
		return
	}
	if g.Less(v.last[key]) {
		v.t.Errorf("%s: %s went back from generation %s to %s (version %q)", v.who, key, v.last[key], g, version)
	}
	v.last[key] = v.last[key].Max(g)
}

// next reads the proxy's next response and checks its versions.
func (v *versions) next() xdstest.Response {
	v.t.Helper()
	r := xdstest.Next(v.t, v.p)
	if len(r.Versions) == 0 && len(r.Removed) == 0 {
		v.see(r.TypeURL, r.Version) // state of the world
	}
	for name, version := range r.Versions {
		v.see(r.TypeURL+" "+name, version)
		if v.held[r.TypeURL] == nil {
			v.held[r.TypeURL] = map[string]string{}
		}
		v.held[r.TypeURL][name] = version
	}
	return r
}

// oldHeld names a type or resource the proxy holds at a version of an
// epoch other than epoch, "" when there is none.
func (v *versions) oldHeld(epoch uint64) string {
	held := v.p.Versions() // version_info of each type
	if len(v.held) > 0 {   // delta: each resource's version
		held = map[string]string{}
		for typeURL, vs := range v.held {
			for name, version := range vs {
				held[typeURL+" "+name] = version
			}
		}
	}
	for what, version := range held {
		if pool.GenerationOfVersion(version).Epoch != epoch {
			return what
		}
	}
	return ""
}

// until reads responses until done says the one read is the awaited one.
func (v *versions) until(done func(xdstest.Response) bool) {
	v.t.Helper()
	for !done(v.next()) {
	}
}

// clusterTimeout is cluster name's connect timeout in r, 0 when r lacks it.
func clusterTimeout(r xdstest.Response, name string) time.Duration {
	var c clusterv3.Cluster
	a := r.Resources[name]
	if r.TypeURL != cds || a == nil || a.UnmarshalTo(&c) != nil {
		return 0
	}
	return c.GetConnectTimeout().AsDuration()
}

// lossCase is how mesh-compiled gets lost.
type lossCase struct {
	name string
	// keepStore runs NATS on a store directory of the test's.
	keepStore bool
	// lose loses mesh-compiled (and maybe more); dir is the store
	// directory when keepStore.
	lose func(t *testing.T, m *mesh, dir string)
}

// TestNewEpochReachesEveryProxyAfterLoss (issue 15, item 2): with two
// edges and state-of-the-world and delta proxies connected, mesh-compiled
// is lost (deleted and recreated by an operator, or the whole JetStream
// store with it when NATS restarts on an empty store directory). The
// compiler declares it again and writes every key under a new epoch,
// numbering from 1, below the numbers the proxies hold; then an edit.
//   - Both edges watch the new bucket, take the new epoch as newer and as a
//     full replacement, and every proxy gets it and then the edit.
//   - No proxy is ever served a version of a generation before one it was
//     served already.
//   - A new edge started after the loss serves a proxy that reconnects with
//     the versions it held from before the loss instead of refusing it as
//     newer than its own (today's edges compared the numbers alone: 7 > 2).
//
// Each case fails on today's code: the edges ignore generations 1 and 2
// as older than 7 and stay ready, and the new edge refuses the proxy.
func TestNewEpochReachesEveryProxyAfterLoss(t *testing.T) {
	for _, c := range []lossCase{
		{
			name: "bucket deleted and recreated",
			lose: func(t *testing.T, m *mesh, _ string) {
				if err := m.conn(bus.RoleAdmin).JetStream().DeleteKeyValue(t.Context(), bus.BucketCompiled); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:      "JetStream store lost",
			keepStore: true,
			lose: func(t *testing.T, m *mesh, dir string) {
				// NATS comes back at the same address on an empty store.
				m.nats.Stop()
				entries, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
						t.Fatal(err)
					}
				}
				if err := m.nats.Restart(t.Context()); err != nil {
					t.Fatal(err)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) { newEpochAfterLoss(t, c) })
	}
}

func newEpochAfterLoss(t *testing.T, c lossCase) {
	var dir string
	if c.keepStore {
		dir = t.TempDir()
	}
	m := newMesh(t, dir)
	m.epoch = 1_700_000_000_000
	m.createBuckets()
	m.seed()
	for i := range 6 { // the old epoch's numbers run up to 7
		m.commit(m.res(xdstest.Cluster("shared", time.Duration(i+2)*time.Second), "shared"))
	}
	e1, e2 := m.startReady("edge-1", time.Minute), m.startReady("edge-2", time.Minute)
	proxies := []*versions{
		follow(t, "a sotw on edge-1", m.proxy(e1, spiffe("a"), xdstest.ProxyOptions{NodeID: "a-sotw", Types: allTypes})),
		follow(t, "a delta on edge-2", m.proxy(e2, spiffe("a"), xdstest.ProxyOptions{NodeID: "a-delta", Delta: true, Types: allTypes})),
		follow(t, "b sotw on edge-2", m.proxy(e2, spiffe("b"), xdstest.ProxyOptions{NodeID: "b-sotw", Types: allTypes})),
	}
	for _, p := range proxies {
		for range 4 {
			p.next()
		}
	}
	oldSotW, oldDelta := proxies[0].p.Versions(), map[string]map[string]string{}
	for typeURL, held := range proxies[1].held {
		oldDelta[typeURL] = maps.Clone(held)
	}
	if g := pool.GenerationOfVersion(oldSotW[cds]); g.Number != 7 {
		t.Fatalf("before the loss the proxy holds %s at %s, want generation 7", cds, g)
	}

	lost := time.Now()
	c.lose(t, m, dir)
	// The compiler declares mesh-compiled again and rewrites it under a new
	// epoch (see the policy-compiler's TestLostBucketIsRewrittenWithNoEdit);
	// the cert-authority writes mesh-trust again.
	m.createBuckets()
	m.epoch, m.gen = m.epoch+500_000, 0
	m.seed() // new epoch, generation 1: shared back at 1s
	edit := time.Now()
	m.commit(m.res(xdstest.Cluster("ca", 7*time.Second), "ca"))
	want := pool.Gen{Epoch: m.epoch, Number: 2}
	xdstest.WaitFor(t, "both edges on the new epoch's edit", func() bool {
		return e1.edge.Server().Applied() == want && e2.edge.Server().Applied() == want
	})
	t.Logf("%s: the edit was applied by both edges %s after it was written (%s after the loss)", c.name,
		time.Since(edit).Round(time.Millisecond), time.Since(lost).Round(time.Millisecond))
	m.waitReady(e1, e2)

	for _, p := range proxies[:2] {
		p.until(func(r xdstest.Response) bool { return clusterTimeout(r, "ca") == 7*time.Second })
	}
	t.Logf("%s: the edit reached the proxies of a %s after it was written", c.name, time.Since(edit).Round(time.Millisecond))
	// Every proxy gets the whole new epoch: what each holds is of it.
	for _, p := range proxies {
		p.until(func(xdstest.Response) bool { return p.oldHeld(m.epoch) == "" })
	}

	// A new edge, and proxies reconnecting to it with what they held before
	// the loss: generation 7 of the old epoch, above the new epoch's 2.
	e3 := m.startReady("edge-3", time.Minute)
	again := follow(t, "a sotw again on edge-3", m.proxy(e3, spiffe("a"), xdstest.ProxyOptions{NodeID: "a-sotw", Types: allTypes, Versions: oldSotW}))
	again.until(func(r xdstest.Response) bool { return clusterTimeout(r, "ca") == 7*time.Second })
	againDelta := follow(t, "a delta again on edge-3", m.proxy(e3, spiffe("a"), xdstest.ProxyOptions{NodeID: "a-delta", Delta: true, Types: allTypes, Initial: oldDelta}))
	againDelta.until(func(r xdstest.Response) bool { return clusterTimeout(r, "ca") == 7*time.Second })
	if got := pool.GenerationOfVersion(again.p.Version(cds)); got != want {
		t.Errorf("%s: %s at generation %s, want %s", again.who, cds, got, want)
	}
	if got := pool.GenerationOfVersion(againDelta.held[cds]["ca"]); got != want {
		t.Errorf("%s: cluster ca at generation %s, want %s", againDelta.who, got, want)
	}
}

// TestRecreatedEmptyBucketTurnsTheEdgeNotReady (issue 15, item 2): while
// mesh-compiled is recreated and holds no generation yet, an edge holds no
// current generation: it turns not ready, saying why, and keeps serving its
// last state to the proxies connected; the new epoch makes it ready again.
// Today's edge stays ready on the lost state.
func TestRecreatedEmptyBucketTurnsTheEdgeNotReady(t *testing.T) {
	m := newMesh(t, "")
	m.epoch = 1_700_000_000_000
	m.createBuckets()
	m.seed()
	e := m.startReady("edge-1", time.Minute)
	p := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	initial(t, p)

	if err := m.conn(bus.RoleAdmin).JetStream().DeleteKeyValue(t.Context(), bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	m.createBuckets()
	xdstest.WaitFor(t, "not ready on the recreated bucket", func() bool {
		err := e.edge.CheckSync(t.Context())
		return err != nil && strings.Contains(err.Error(), "mesh-compiled was recreated") && !e.edge.Server().Serving()
	})
	t.Logf("not ready %s after the bucket was deleted: %v", time.Since(lost).Round(time.Millisecond), e.edge.CheckSync(t.Context()))
	select {
	case <-p.Done():
		t.Fatalf("the connected proxy lost its stream: %v", p.Err())
	default:
	}

	m.epoch, m.gen = m.epoch+1, 0
	m.seed()
	m.waitReady(e)
	if got := e.edge.Server().Applied(); got != (pool.Gen{Epoch: m.epoch, Number: 1}) {
		t.Errorf("applied %s, want %d:1", got, m.epoch)
	}
}
