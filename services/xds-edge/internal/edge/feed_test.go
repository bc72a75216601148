package edge

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// fakeTarget is the feed's target as a real pool, recording serving.
type fakeTarget struct {
	pool    *pool.Pool
	serving bool
	bundles int
}

func (f *fakeTarget) Stage(k string, v []byte) error { return f.pool.Stage(k, v) }
func (f *fakeTarget) Commit(g *meshv1.Generation) (*pool.Change, error) {
	return f.pool.Commit(g)
}
func (f *fakeTarget) DropStaged()                              { f.pool.DropStaged() }
func (f *fakeTarget) Dangling() int                            { return f.pool.DanglingNames() }
func (f *fakeTarget) SetTrustBundle(*meshv1.TrustBundle) error { f.bundles++; return nil }
func (f *fakeTarget) SetServing(ok bool)                       { f.serving = ok }

func put(t *testing.T, w xdstest.Write) bus.Event {
	t.Helper()
	b, err := proto.Marshal(w.Value)
	if err != nil {
		t.Fatal(err)
	}
	return bus.Event{Kind: bus.EventPut, Key: w.Key, Value: b, Context: context.Background()}
}

func TestReadinessFollowsTheSync(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	up := true
	now := time.Unix(1000, 0)
	target := &fakeTarget{pool: pool.New()}
	f := &feed{log: logrus.NewEntry(log), target: target, connected: func() bool { return up }, threshold: 30 * time.Second, now: func() time.Time { return now }}
	initialized := bus.Event{Kind: bus.EventInitialized, Context: context.Background()}

	steps := []struct {
		name  string
		apply func()
		want  string // substring of the readiness error; "" means ready
	}{
		{"nothing delivered", func() {}, "initial values of mesh-compiled"},
		{"compiled delivered, empty", func() { f.compiledEvent(initialized) }, "initial value of mesh-trust"},
		{"trust delivered", func() {
			ca, _ := xdstest.NewCA("r")
			f.trustEvent(put(t, xdstest.Write{Key: layout.BundleKey, Value: ca.Bundle()}))
			f.trustEvent(initialized)
		}, "no generation yet"},
		{"keys without a generation", func() {
			w, err := xdstest.Resource(xdstest.Cluster("c", time.Second), "c", 1)
			if err != nil {
				t.Fatal(err)
			}
			f.compiledEvent(put(t, w))
		}, "no generation yet"},
		{"first generation", func() { f.compiledEvent(put(t, xdstest.Generation(1))) }, ""},
		{"an older generation record", func() { f.compiledEvent(put(t, xdstest.Generation(1))) }, ""},
		{"nats lost briefly", func() { up = false; f.update(); now = now.Add(10 * time.Second) }, ""},
		{"nats lost past the threshold", func() { now = now.Add(25 * time.Second) }, "nats lost for 35s"},
		{"nats back", func() { up = true }, ""},
	}
	for _, s := range steps {
		s.apply()
		f.update()
		err := f.checkSync()
		if err == nil {
			err = f.checkNATS()
		}
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: not ready: %v", s.name, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: readiness error %v, want one mentioning %q", s.name, err, s.want)
		}
		if target.serving != (err == nil) {
			t.Errorf("%s: serving = %v while readiness error is %v", s.name, target.serving, err)
		}
	}
	if target.bundles != 1 {
		t.Errorf("bundles installed: %d", target.bundles)
	}
	if g, _ := target.pool.Generation(); g != 1 {
		t.Errorf("applied generation %d", g)
	}
}

// TestFeedFollowsEpochs (issue 15, item 2): a generation of a newer epoch
// seen on a watch that already delivered one makes the feed watch again
// from the start, and is applied from that watch; until then, and while
// mesh-compiled holds a generation of an older epoch than the applied one,
// the edge is not ready and says why.
func TestFeedFollowsEpochs(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	target := &fakeTarget{pool: pool.New()}
	f := &feed{log: logrus.NewEntry(log), target: target, connected: func() bool { return true }, threshold: time.Minute, now: time.Now}
	initialized := bus.Event{Kind: bus.EventInitialized, Context: context.Background()}
	gen := func(epoch, n uint64) bus.Event {
		return put(t, xdstest.Write{Key: layout.GenerationKey, Value: &meshv1.Generation{Epoch: epoch, Number: n}})
	}
	cluster := func(timeout time.Duration, n uint64) bus.Event {
		w, err := xdstest.Resource(xdstest.Cluster("c", timeout), "c", n)
		if err != nil {
			t.Fatal(err)
		}
		return put(t, w)
	}
	const e1, e2 = 1_700_000_000_000, 1_700_000_500_000
	ca, _ := xdstest.NewCA("r")
	f.trustEvent(put(t, xdstest.Write{Key: layout.BundleKey, Value: ca.Bundle()}))
	f.trustEvent(initialized)
	f.compiledEvent(cluster(time.Second, 1))
	f.compiledEvent(initialized)
	f.compiledEvent(gen(e1, 4))
	f.update()
	if err := f.checkSync(); err != nil || !target.serving {
		t.Fatalf("after the first generation: %v", err)
	}

	// The bucket was recreated and the watch resumed in it: part of the
	// new epoch's keys and its generation arrive on the old watch.
	f.compiledEvent(cluster(2*time.Second, 1))
	if !f.compiledEvent(gen(e2, 1)) {
		t.Fatal("a new epoch on a resumed watch was applied, not watched again")
	}
	if got := target.pool.Applied(); got != (pool.Gen{Epoch: e1, Number: 4}) {
		t.Fatalf("applied %v", got)
	}
	// What run does on that answer: watch again from the start.
	target.DropStaged()
	f.mu.Lock()
	f.watchGen, f.rewatched = false, "mesh-compiled started a new epoch"
	f.mu.Unlock()
	f.update()
	if err := f.checkSync(); err == nil || !strings.Contains(err.Error(), "started a new epoch") || target.serving {
		t.Errorf("while watching again: ready=%v serving=%v, want not ready saying why", err, target.serving)
	}
	f.compiledEvent(cluster(3*time.Second, 1))
	if f.compiledEvent(gen(e2, 1)) {
		t.Fatal("the new epoch on a fresh watch was not applied")
	}
	f.compiledEvent(initialized)
	f.update()
	if err := f.checkSync(); err != nil || !target.serving {
		t.Errorf("after the new epoch: %v", err)
	}
	if got := target.pool.Applied(); got != (pool.Gen{Epoch: e2, Number: 1}) {
		t.Errorf("applied %v, want %d:1", got, uint64(e2))
	}

	// A compiler with a lagging clock writes an older epoch: ignored, and
	// the edge says it holds no current generation.
	f.compiledEvent(gen(e1, 9))
	f.update()
	if err := f.checkSync(); err == nil || !strings.Contains(err.Error(), "older epoch") || target.serving {
		t.Errorf("an older epoch in the bucket: ready=%v serving=%v", err, target.serving)
	}
	if got := target.pool.Applied(); got != (pool.Gen{Epoch: e2, Number: 1}) {
		t.Errorf("applied %v after an older epoch", got)
	}
	f.compiledEvent(gen(e2, 2))
	f.update()
	if err := f.checkSync(); err != nil {
		t.Errorf("after the next generation of the applied epoch: %v", err)
	}
	// Within an epoch, a stale generation is ignored as before: still ready.
	f.compiledEvent(gen(e2, 1))
	if err := f.checkSync(); err != nil {
		t.Errorf("after a stale generation of the epoch: %v", err)
	}
}
