package bus_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The nats-server keeps a few process-wide goroutines alive after shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}

// startServer runs an embedded server for one test.
func startServer(t *testing.T, o bustest.Options) *bustest.Server {
	t.Helper()
	srv, err := bustest.Start(o)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func connect(t *testing.T, o bus.Options) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(t.Context(), o)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// watched starts a server, declares bucket and watches all of it; the
// caller reads the initial events.
func watched(t testing.TB, bucket string) (*bus.Conn, *bus.Store, *bus.Watcher) {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := bus.Connect(context.Background(), bus.Options{URL: srv.URL()})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	st, err := c.EnsureBucket(context.Background(), bucket, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(context.Background(), ">")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return c, st, w
}

// next returns the next watch event or fails after a deadline.
func next(t *testing.T, w *bus.Watcher) bus.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return bus.Event{}
}

// expectQuiet asserts that no event arrives for a short while.
func expectQuiet(t *testing.T, w *bus.Watcher) {
	t.Helper()
	select {
	case ev := <-w.Events():
		t.Fatalf("unexpected %s event for %q", ev.Kind, ev.Key)
	case <-time.After(300 * time.Millisecond):
	}
}

func str(s string) proto.Message { return wrapperspb.String(s) }

func TestPutWatchRoundTrip(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	c := connect(t, bus.Options{URL: srv.URL()})
	ctx := t.Context()
	st, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Declaring again is harmless.
	if _, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{}); err != nil {
		t.Fatalf("second declaration: %v", err)
	}
	keyA := bus.Key("service", "bookstore", "bookstore.v1")
	if _, err := st.Put(ctx, keyA, str("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, bus.Key("service", "bookstore", "gone"), str("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, bus.Key("service", "bookstore", "gone")); err != nil {
		t.Fatal(err)
	}

	w, err := st.Watch(ctx, "service.>")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := next(t, w)
	if ev.Kind != bus.EventPut || ev.Key != keyA {
		t.Fatalf("first event = %s %q, want put %q", ev.Kind, ev.Key, keyA)
	}
	var got wrapperspb.StringValue
	if err := ev.Decode(&got); err != nil || got.Value != "a1" {
		t.Fatalf("decoded %q, %v; want a1", got.Value, err)
	}
	// The deleted key is not among the initial values.
	if ev := next(t, w); ev.Kind != bus.EventInitialized {
		t.Fatalf("second event = %s %q, want initialized", ev.Kind, ev.Key)
	}

	// Unchanged puts write nothing, both from the writer that wrote the
	// value and from a fresh store that has never seen the key.
	if _, written, err := st.PutIfChanged(ctx, keyA, str("a1")); err != nil || written {
		t.Fatalf("unchanged put: written=%v err=%v", written, err)
	}
	fresh, err := c.Bucket(ctx, bus.BucketObserved)
	if err != nil {
		t.Fatal(err)
	}
	if _, written, err := fresh.PutIfChanged(ctx, keyA, str("a1")); err != nil || written {
		t.Fatalf("unchanged put from a fresh store: written=%v err=%v", written, err)
	}
	expectQuiet(t, w)

	if _, written, err := st.PutIfChanged(ctx, keyA, str("a2")); err != nil || !written {
		t.Fatalf("changed put: written=%v err=%v", written, err)
	}
	ev = next(t, w)
	if err := ev.Decode(&got); err != nil || ev.Kind != bus.EventPut || got.Value != "a2" {
		t.Fatalf("update = %s %q (%v), want put a2", ev.Kind, got.Value, err)
	}
	var read wrapperspb.StringValue
	if rev, err := fresh.Get(ctx, keyA, &read); err != nil || read.Value != "a2" || rev != ev.Revision {
		t.Fatalf("Get = %q rev %d (%v), want a2 rev %d", read.Value, rev, err, ev.Revision)
	}

	if deleted, err := st.DeleteIfPresent(ctx, keyA); err != nil || !deleted {
		t.Fatalf("delete: %v %v", deleted, err)
	}
	if ev := next(t, w); ev.Kind != bus.EventDelete || ev.Key != keyA {
		t.Fatalf("got %s %q, want delete %q", ev.Kind, ev.Key, keyA)
	}
	if deleted, err := st.DeleteIfPresent(ctx, keyA); err != nil || deleted {
		t.Fatalf("second delete wrote: %v %v", deleted, err)
	}
	expectQuiet(t, w)
	if _, err := fresh.Get(ctx, keyA, &read); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Get after delete: %v, want bus.ErrNotFound", err)
	}
}

func TestPrimeAndEmptyWatch(t *testing.T) {
	c, st, w := watched(t, bus.BucketCompiled)
	ctx := t.Context()
	if ev := next(t, w); ev.Kind != bus.EventInitialized {
		t.Fatalf("empty bucket: first event %s, want initialized", ev.Kind)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := st.Put(ctx, k, str(k)); err != nil {
			t.Fatal(err)
		}
	}
	other, err := c.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := other.Prime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "a,b,c" {
		t.Fatalf("primed keys %q", keys)
	}
	// After priming, unchanged keys are skipped and absent keys are known absent.
	if _, written, _ := other.PutIfChanged(ctx, "b", str("b")); written {
		t.Fatal("primed store rewrote an unchanged key")
	}
	if deleted, _ := other.DeleteIfPresent(ctx, "zzz"); deleted {
		t.Fatal("primed store deleted an absent key")
	}
}

func TestWatchSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, bustest.Options{StoreDir: dir})
	c := connect(t, bus.Options{URL: srv.URL()})
	ctx := t.Context()
	st, err := c.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "bundle", str("v1")); err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(ctx, ">")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := next(t, w); ev.Kind != bus.EventPut {
		t.Fatalf("got %s, want put", ev.Kind)
	}
	if ev := next(t, w); ev.Kind != bus.EventInitialized {
		t.Fatalf("got %s, want initialized", ev.Kind)
	}

	srv.Stop()
	time.Sleep(500 * time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := srv.Restart(rctx); err != nil {
		t.Fatal(err)
	}

	// The writer's connection reconnects on its own; retry the put until it does.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := st.Put(pctx, "bundle", str("v2"))
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put after restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The watcher sees the later put (and nothing older again).
	for {
		ev := next(t, w)
		var v wrapperspb.StringValue
		if err := ev.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if v.Value == "v1" {
			t.Fatal("watcher delivered the old value again after the restart")
		}
		if ev.Kind == bus.EventPut && v.Value == "v2" {
			break
		}
	}
}

func TestOversizedValueRefused(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	c := connect(t, bus.Options{URL: srv.URL()})
	st, err := c.EnsureBucket(t.Context(), bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := bus.Key("resource", "huge")
	big := wrapperspb.Bytes(bytes.Repeat([]byte{'x'}, bus.MaxValueSize+1))
	_, err = st.Put(t.Context(), key, big)
	if !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("err = %v, want bus.ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), bus.BucketCompiled) {
		t.Fatalf("error %q does not name the bucket and key", err)
	}
}

func TestEdgeCannotWriteCompiled(t *testing.T) {
	pw := map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleEdge: "edge-pw", bus.RoleCompiler: "compiler-pw"}
	srv := startServer(t, bustest.Options{Passwords: pw})
	ctx := t.Context()

	compiler := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleCompiler, User: "compiler", Password: pw[bus.RoleCompiler]})
	cst, err := compiler.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		t.Fatalf("compiler declares its bucket: %v", err)
	}
	if _, err := cst.Put(ctx, "generation", str("1")); err != nil {
		t.Fatalf("compiler writes its bucket: %v", err)
	}

	edge := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: pw[bus.RoleEdge]})
	est, err := edge.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		t.Fatalf("edge opens the compiled bucket: %v", err)
	}
	// The edge can read and watch...
	var v wrapperspb.StringValue
	if _, err := est.Get(ctx, "generation", &v); err != nil || v.Value != "1" {
		t.Fatalf("edge reads: %q %v", v.Value, err)
	}
	w, err := est.Watch(ctx, ">")
	if err != nil {
		t.Fatalf("edge watches: %v", err)
	}
	defer w.Stop()
	next(t, w)
	// ...but cannot write, delete or redeclare, and the put says why.
	attempt := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	_, err = est.Put(attempt(), "generation", str("666"))
	if err == nil {
		t.Fatal("edge wrote to mesh-compiled")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") || !strings.Contains(err.Error(), "generation") {
		t.Fatalf("put error %q does not say it is a permissions violation on the key", err)
	}
	if err := est.Delete(attempt(), "generation"); err == nil {
		t.Fatal("edge deleted from mesh-compiled")
	}
	if _, err := edge.EnsureBucket(attempt(), bus.BucketCompiled, bus.BucketOptions{Memory: true}); err == nil {
		t.Fatal("edge redeclared mesh-compiled")
	}
	admin := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin, User: "admin", Password: pw[bus.RoleAdmin]})
	ast, err := admin.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ast.Get(ctx, "generation", &v); err != nil || v.Value != "1" {
		t.Fatalf("after the edge's attempts the value is %q (%v), want 1", v.Value, err)
	}
	// An unknown user cannot connect at all.
	if _, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), User: "edge", Password: "wrong", ConnectTimeout: time.Second}); err == nil {
		t.Fatal("connected with a wrong password")
	}
}

func TestTraceContextSurvivesPutAndWatch(t *testing.T) {
	_, st, w := watched(t, bus.BucketObserved)
	ctx := t.Context()
	next(t, w) // initialized

	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	pctx := trace.ContextWithSpanContext(ctx, sc)
	if _, err := st.Put(pctx, "pod.bookstore.p1", str("x")); err != nil {
		t.Fatal(err)
	}
	ev := next(t, w)
	got := trace.SpanContextFromContext(ev.Context)
	if !got.IsRemote() || got.TraceID() != tid || got.SpanID() != sid || !got.IsSampled() {
		t.Fatalf("watched span context = %+v, want trace %s span %s", got, tid, sid)
	}
	if err := st.Delete(pctx, "pod.bookstore.p1"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); trace.SpanContextFromContext(ev.Context).TraceID() != tid {
		t.Fatal("trace context lost on delete")
	}
}

// TestWatchEnded: a watch closed because its caller is stopping ends
// without an error; one closed under a live caller names its bucket.
func TestWatchEnded(t *testing.T) {
	_, st, _ := watched(t, bus.BucketCompiled)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := st.Watch(ctx, ">")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range w.Events() {
	}
	if err := w.Ended(ctx); err != nil {
		t.Fatalf("stopping caller: %v", err)
	}
	if err := w.Ended(context.Background()); err == nil || !strings.Contains(err.Error(), "watch "+bus.BucketCompiled+" ended") {
		t.Fatalf("live caller: %v, want the bucket named", err)
	}
}
