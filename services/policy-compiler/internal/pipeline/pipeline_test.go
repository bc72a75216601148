package pipeline

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/compile"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

var passwords = map[bus.Role]string{bus.RoleWatcher: "w-pw", bus.RoleCompiler: "c-pw", bus.RoleEdge: "e-pw", bus.RoleAdmin: "a-pw"}

// harness is an embedded NATS server with the watcher's bucket.
type harness struct {
	t        testing.TB
	srv      *bustest.Server
	observed *bus.Store
	statuses chan *meshv1.PolicyStatus
	compiled chan string // keys written to mesh-compiled, as an edge sees them
}

func connect(t testing.TB, srv *bustest.Server, role bus.Role) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: role, User: string(role), Password: passwords[role]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{Passwords: passwords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	h := &harness{t: t, srv: srv, statuses: make(chan *meshv1.PolicyStatus, 1000), compiled: make(chan string, 100000)}
	w := connect(t, srv, bus.RoleWatcher)
	h.observed, err = w.EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := w.NATS().Subscribe(bus.SubjectPolicyStatus+".>", func(m *nats.Msg) {
		st := &meshv1.PolicyStatus{}
		if err := proto.Unmarshal(m.Data, st); err != nil {
			t.Errorf("status on %s: %v", m.Subject, err)
			return
		}
		want := bus.SubjectPolicyStatus + "." + bus.Key(layoutKind(st.GetObject().GetKind()), st.GetObject().GetNamespace(), st.GetObject().GetName())
		if m.Subject != want {
			t.Errorf("status subject %s, want %s", m.Subject, want)
		}
		select {
		case h.statuses <- st:
		default: // a benchmark publishing thousands; tests read a few
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

func layoutKind(kind string) string {
	switch kind {
	case "TrafficTarget":
		return layout.KindTrafficTarget
	case "HTTPRouteGroup":
		return layout.KindHTTPRouteGroup
	case "TCPRoute":
		return layout.KindTCPRoute
	case "TrafficSplit":
		return layout.KindTrafficSplit
	}
	return kind
}

func (h *harness) put(objs ...synth.Object) {
	h.t.Helper()
	for _, o := range objs {
		if _, err := h.observed.Put(h.t.Context(), o.Key(), o.Msg); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) sync(epoch uint64, state meshv1.SyncState) {
	h.t.Helper()
	m := synth.SyncMarker(epoch)
	m.State = state
	if _, err := h.observed.Put(h.t.Context(), layout.SyncKey, m); err != nil {
		h.t.Fatal(err)
	}
}

// watchCompiled records, as the edge role, every key written to
// mesh-compiled from now on.
func (h *harness) watchCompiled() {
	h.t.Helper()
	e := connect(h.t, h.srv, bus.RoleEdge)
	s, err := e.Bucket(h.t.Context(), bus.BucketCompiled)
	if err != nil {
		h.t.Fatal(err)
	}
	w, err := s.Watch(h.t.Context(), ">")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(w.Stop)
	// Only writes made from now on: skip the initial values.
	for ev := range w.Events() {
		if ev.Kind == bus.EventInitialized {
			break
		}
	}
	go func() {
		for ev := range w.Events() {
			if ev.Kind == bus.EventPut || ev.Kind == bus.EventDelete {
				select {
				case h.compiled <- ev.Key:
				case <-h.t.Context().Done():
					return
				}
			}
		}
	}()
}

// running is a compiler started on the harness.
type running struct {
	c      *Compiler
	cancel context.CancelFunc
	done   chan error
}

// newBookstoreHarness is a harness whose mesh-observed holds the bookstore
// demo and a sync marker in state.
func newBookstoreHarness(t testing.TB, state meshv1.SyncState) *harness {
	t.Helper()
	h := newHarness(t)
	h.put(synth.Bookstore(false)...)
	h.sync(1, state)
	return h
}

// bookstoreEngine configures the compile core for the synth meshes.
func bookstoreEngine() compile.Options {
	return compile.Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}}
}

// buckets connects as the compiler role and opens its buckets:
// mesh-observed, and mesh-compiled (declared in memory).
func (h *harness) buckets() (conn *bus.Conn, observed, compiled *bus.Store) {
	h.t.Helper()
	conn = connect(h.t, h.srv, bus.RoleCompiler)
	compiled, err := conn.EnsureBucket(h.t.Context(), bus.BucketCompiled, bus.BucketOptions{Memory: true})
	if err != nil {
		h.t.Fatal(err)
	}
	observed, err = conn.Bucket(h.t.Context(), bus.BucketObserved)
	if err != nil {
		h.t.Fatal(err)
	}
	return conn, observed, compiled
}

// start starts a compiler of the synth meshes that always writes.
func (h *harness) start() *running {
	h.t.Helper()
	conn, observed, compiled := h.buckets()
	return h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine()}), nil)
}

// run starts c until the test ends or the returned compiler is stopped.
// beside, when set, runs next to it (an elector), and a stop waits for both.
func (h *harness) run(c *Compiler, beside func(context.Context) error) *running {
	ctx, cancel := context.WithCancel(h.t.Context())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	besideDone := make(chan struct{})
	if beside == nil {
		close(besideDone)
	} else {
		go func() { _ = beside(ctx); close(besideDone) }()
	}
	go func() { err := c.Start(ctx); <-besideDone; r.done <- err }()
	h.t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

// settle waits until the compiler has been idle long enough for any pending
// compile (debounce plus max delay) to have been committed.
func settle() { time.Sleep(DefaultMaxDelay + 200*time.Millisecond) }

func (h *harness) drainCompiled() []string {
	var out []string
	for {
		select {
		case k := <-h.compiled:
			out = append(out, k)
		case <-time.After(300 * time.Millisecond):
			return out
		}
	}
}

func TestCompilerEndToEnd(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_LISTING)
	r := h.start()
	h.watchCompiled()

	// Nothing is compiled before the sync marker of the epoch.
	settle()
	if s := r.c.Stats(); s.Puts != 0 || s.Generations != 0 || r.c.Ready(t.Context()) == nil {
		t.Fatalf("compiled before the sync marker: %+v", s)
	}
	h.sync(1, meshv1.SyncState_SYNC_STATE_SYNCED)
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	if err := r.c.Ready(t.Context()); err != nil {
		t.Errorf("not ready after the first generation: %v", err)
	}
	first := r.c.Stats()
	keys := h.drainCompiled()
	if len(keys) != first.Puts+1 || keys[len(keys)-1] != layout.GenerationKey {
		t.Fatalf("edge saw %d keys ending in %q, want %d puts then the generation", len(keys), keys[len(keys)-1], first.Puts)
	}
	if first.Puts != 29+6 { // resources + groups of the bookstore demo
		t.Errorf("first generation wrote %d keys, want 35", first.Puts)
	}
	accepted := 0
	for len(h.statuses) > 0 {
		st := <-h.statuses
		if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED || st.GetGeneration() != 1 {
			t.Errorf("status %v", st)
		}
		accepted++
	}
	if accepted != 8 {
		t.Errorf("%d policy statuses, want 8 (4 TrafficTargets, 2 HTTPRouteGroups, 1 TCPRoute, 1 TrafficSplit)", accepted)
	}

	// One endpoint change: one resource key, then the generation.
	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	h.put(synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.10"}, synth.Endpoint{Pod: "bookwarehouse-2", IP: "10.244.3.11"}))
	apptest.EventuallyTrue(t, "the second generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 2 })
	keys = h.drainCompiled()
	want := []string{layout.ResourceKey(layout.TypeEndpoint, "bookwarehouse/bookwarehouse|14001"), layout.GenerationKey}
	if len(keys) != 2 || keys[0] != want[0] || keys[1] != want[1] {
		t.Errorf("endpoint change wrote %v, want %v", keys, want)
	}
	if gen := h.generation(); gen.GetNumber() != 2 || gen.GetChangedKeys() != 1 || gen.GetObservedEpoch() != 1 || gen.GetObservedRevision() == 0 {
		t.Errorf("generation = %v", gen)
	}

	// A burst of changes is coalesced into one generation. The burst is
	// pipelined, so that it arrives within the debounce even on a loaded
	// machine.
	burst := h.observed.Batch()
	for i := 0; i < 20; i++ {
		o := synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
			synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.10"}, synth.Endpoint{Pod: "bookwarehouse-2", IP: "10.244.4." + string(rune('0'+i%10))})
		if err := burst.Put(t.Context(), o.Key(), o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := burst.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	settle()
	if g := r.c.Stats().Generations; g < 3 || g > 4 {
		t.Errorf("a burst of 20 changes made %d generations, want 1 or 2 more", g-2)
	}

	// A rejected policy: a status naming the field, and no write.
	before := r.c.Stats()
	h.put(synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1"}, synth.Backend{Service: "bookstore-v2"}))
	var st *meshv1.PolicyStatus
	select {
	case st = <-h.statuses:
	case <-time.After(5 * time.Second):
		t.Fatal("no status for the rejected TrafficSplit")
	}
	if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetFieldPath() != "spec.backends" || st.GetGeneration() != 0 {
		t.Errorf("status = %v", st)
	}
	if after := r.c.Stats(); after.Puts != before.Puts || after.Generations != before.Generations {
		t.Errorf("a rejected policy wrote keys: %+v → %+v", before, after)
	}
}

// generation reads, as the edge role, the generation record of
// mesh-compiled.
func (h *harness) generation() *meshv1.Generation {
	h.t.Helper()
	s, err := connect(h.t, h.srv, bus.RoleEdge).Bucket(h.t.Context(), bus.BucketCompiled)
	if err != nil {
		h.t.Fatal(err)
	}
	gen := &meshv1.Generation{}
	if _, err := s.Get(h.t.Context(), layout.GenerationKey, gen); err != nil {
		h.t.Fatal(err)
	}
	return gen
}

func TestRestartWritesNothing(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	r.stop()

	h.watchCompiled()
	r2 := h.start()
	apptest.EventuallyTrue(t, "readiness", 10*time.Second, func() bool { return r2.c.Ready(t.Context()) == nil })
	settle()
	s := r2.c.Stats()
	if s.Puts != 0 || s.Deletes != 0 || s.Generations != 0 || s.Generation != 1 {
		t.Errorf("restart with no change: %+v, want zero writes at generation 1", s)
	}
	if s.Skipped != 35 {
		t.Errorf("restart skipped %d keys, want 35", s.Skipped)
	}
	if keys := h.drainCompiled(); len(keys) != 0 {
		t.Errorf("edge saw writes after a restart: %v", keys)
	}
	r2.stop()

	// Changes while the compiler is down: the next one writes just those.
	h.put(synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1", Weight: 50}, synth.Backend{Service: "bookstore-v2", Weight: 50}))
	if err := h.observed.Delete(t.Context(), layout.ObservedKey(layout.KindPod, "bookthief", "bookthief-7f9c6d8b5-fghij")); err != nil {
		t.Fatal(err)
	}
	r3 := h.start()
	apptest.EventuallyTrue(t, "the second generation", 10*time.Second, func() bool { return r3.c.Stats().Generations == 1 })
	keys := h.drainCompiled()
	want := map[string]bool{
		layout.ResourceKey(layout.TypeRoute, "bookstore/bookstore|14001"): true,
		layout.GroupKey("bookthief", "bookthief"):                         true,
		layout.GenerationKey: true,
	}
	if len(keys) != 3 || keys[2] != layout.GenerationKey {
		t.Fatalf("restart after changes wrote %v, want the route, the group delete, then the generation", keys)
	}
	for _, k := range keys {
		if !want[k] {
			t.Errorf("unexpected write %s", k)
		}
	}
	if s := r3.c.Stats(); s.Generation != 2 {
		t.Errorf("generation = %d, want 2", s.Generation)
	}
}

// fakeStore fails puts on demand, for the retry path.
type fakeStore struct {
	Writable
	mu   sync.Mutex
	fail bool
}

func (f *fakeStore) Put(ctx context.Context, key string, m proto.Message) (uint64, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return 0, context.DeadlineExceeded
	}
	return f.Writable.Put(ctx, key, m)
}

func TestFailedWriteIsRetried(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	fs := &fakeStore{Writable: compiled, fail: true}
	c := h.run(New(observed, fs, conn.NATS(), Options{Engine: compile.Options{MeshName: synth.MeshName}}), nil).c
	time.Sleep(300 * time.Millisecond)
	if c.Stats().Generations != 0 || c.Ready(t.Context()) == nil {
		t.Fatal("committed while writes fail")
	}
	fs.mu.Lock()
	fs.fail = false
	fs.mu.Unlock()
	apptest.EventuallyTrue(t, "the retried generation", 10*time.Second, func() bool { return c.Stats().Generations == 1 })
	if s := c.Stats(); s.Puts != 35 {
		t.Errorf("retry wrote %d keys, want 35", s.Puts)
	}
}
