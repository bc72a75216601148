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
