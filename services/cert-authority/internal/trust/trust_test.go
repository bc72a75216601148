package trust

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func bundle(version string, ids ...string) *meshv1.TrustBundle {
	b := &meshv1.TrustBundle{Version: version}
	for _, id := range ids {
		b.Roots = append(b.Roots, &meshv1.TrustRoot{Id: id, CertificatePem: []byte("pem-" + id)})
	}
	return b
}

func TestHubNext(t *testing.T) {
	h := NewHub()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got := make(chan string, 2)
	go func() {
		b, err := h.Next(ctx, "")
		if err == nil {
			got <- b.Version
		}
		b, err = h.Next(ctx, b.GetVersion())
		if err == nil {
			got <- b.Version
		}
	}()
	if !h.Set(bundle("v1", "a")) {
		t.Fatal("first Set reported no change")
	}
	if h.Set(bundle("v1", "a")) {
		t.Fatal("Set of the same version reported a change")
	}
	if v := <-got; v != "v1" {
		t.Fatalf("first Next = %s", v)
	}
	h.Set(bundle("v2", "a", "b"))
	if v := <-got; v != "v2" {
		t.Fatalf("second Next = %s", v)
	}
	cur, _ := h.Current()
	if cur.UpdateTime == nil {
		t.Error("the hub did not stamp update_time")
	}
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if _, err := h.Next(short, "v2"); err == nil {
		t.Error("Next returned without a change")
	}
}

// TestPublisherWritesOnlyChanges publishes to a real (embedded) NATS
// JetStream KV bucket: the first bundle is written, a restarted publisher
// with the same bundle leaves the key alone, and a rotation writes again.
func TestPublisherWritesOnlyChanges(t *testing.T) {
	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := t.Context()
	conn, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	store, err := conn.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}

	run := func(h *Hub) (stop func()) {
		p := NewPublisher(h, store, PublisherOptions{Key: layout.BundleKey, NotFound: bus.ErrNotFound, OnError: func(err error) { t.Error(err) }})
		c, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = p.Start(c) })
		return func() { cancel(); wg.Wait() }
	}
	waitFor := func(version string) uint64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var b meshv1.TrustBundle
			rev, err := store.Get(ctx, layout.BundleKey, &b)
			if err == nil && b.Version == version {
				return rev
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("bundle %s never appeared in %s", version, bus.BucketTrust)
		return 0
	}

	h := NewHub()
	h.Set(bundle("v1", "a"))
	stop := run(h)
	rev1 := waitFor("v1")
	stop()

	h2 := NewHub() // a restarted CA with the same roots
	h2.Set(bundle("v1", "a"))
	stop = run(h2)
	time.Sleep(200 * time.Millisecond)
	if rev := waitFor("v1"); rev != rev1 {
		t.Errorf("an unchanged bundle was rewritten: revision %d -> %d", rev1, rev)
	}
	h2.Set(bundle("v2", "a", "b"))
	if rev := waitFor("v2"); rev <= rev1 {
		t.Errorf("rotation revision %d, want > %d", rev, rev1)
	}
	stop()
}

// sequence is a Source that answers with its bundles in turn, then the
// last one forever; a nil entry is a failed read.
type sequence struct {
	mu      sync.Mutex
	bundles []*meshv1.TrustBundle
}

func (s *sequence) TrustBundle(context.Context) (*meshv1.TrustBundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bundles[0]
	if len(s.bundles) > 1 {
		s.bundles = s.bundles[1:]
	}
	if b == nil {
		return nil, errors.New("source unavailable")
	}
	return b, nil
}

// TestRefresherFollowsTheSource: Load fills the hub, a failed read keeps
// the last bundle, and Start picks up the source's next bundle.
func TestRefresherFollowsTheSource(t *testing.T) {
	h := NewHub()
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetOutput(io.Discard)
	r := NewRefresher(&sequence{bundles: []*meshv1.TrustBundle{bundle("v1", "a"), nil, bundle("v2", "a", "b")}}, h, 10*time.Millisecond, log)
	if err := r.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b, _ := h.Current(); b.GetVersion() != "v1" {
		t.Fatalf("after Load: %v, want v1", b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	b, err := h.Next(ctx, "v1")
	if err != nil || b.Version != "v2" || len(b.Roots) != 2 {
		t.Fatalf("after refresh: %v, %v; want v2 with two roots", b, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start returned %v", err)
	}
}

// TestPublisherRestoresALostBundle: with a real JetStream KV bucket, the
// bundle's key deleted, then the whole bucket deleted, are written again
// within a few checks (the bucket declared again first); a bundle of
// another version written by someone else (another CA instance) is left
// alone. Before, the publisher wrote only on a change of the hub, and
// mesh-trust stayed empty until the next rotation.
func TestPublisherRestoresALostBundle(t *testing.T) {
	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := t.Context()
	conn, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	store, err := conn.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHub()
	h.Set(bundle("v1", "a"))
	var restored sync.Map
	p := NewPublisher(h, store, PublisherOptions{Key: layout.BundleKey, NotFound: bus.ErrNotFound, Gone: bus.IsBucketGone,
		Check: 100 * time.Millisecond, OnRestore: func(v string) { restored.Store(v, true) }})
	c, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Start(c) })
	defer func() { cancel(); wg.Wait() }()

	holds := func(version string, within time.Duration) bool {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			var b meshv1.TrustBundle
			if _, err := store.Get(ctx, layout.BundleKey, &b); err == nil && b.Version == version {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !holds("v1", 5*time.Second) {
		t.Fatal("v1 never published")
	}
	if err := store.Delete(ctx, layout.BundleKey); err != nil {
		t.Fatal(err)
	}
	if !holds("v1", 5*time.Second) {
		t.Fatal("the deleted key was not written again")
	}
	if err := conn.JetStream().DeleteKeyValue(ctx, bus.BucketTrust); err != nil {
		t.Fatal(err)
	}
	if !holds("v1", 5*time.Second) {
		t.Fatal("the deleted bucket was not declared and written again")
	}
	if _, ok := restored.Load("v1"); !ok {
		t.Error("OnRestore was not told")
	}
	if _, err := store.Put(ctx, layout.BundleKey, bundle("v9", "z")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if !holds("v9", time.Second) {
		t.Error("a bundle of another version, written by another instance, was overwritten")
	}
}
