package bus_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

// TestReaderConsumersAreBounded (issue 15, item 8): a reader role may create
// consumers on the buckets it reads, so each bucket's stream bounds them:
// their number, how long one may live on inactive, and how many messages
// one may hold unacknowledged. The watches the mesh's own readers run stay
// within the limits.
func TestReaderConsumersAreBounded(t *testing.T) {
	pw := map[bus.Role]string{bus.RoleAdmin: "a", bus.RoleEdge: "e", bus.RoleCompiler: "c"}
	srv := startServer(t, bustest.Options{Passwords: pw})
	ctx := t.Context()
	const limit = 6
	compiler := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleCompiler, User: "compiler", Password: "c"})
	if _, err := compiler.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{Memory: true, MaxConsumers: limit}); err != nil {
		t.Fatal(err)
	}
	// Declaring it again (a restart) keeps the limits.
	if _, err := compiler.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{Memory: true, MaxConsumers: limit}); err != nil {
		t.Fatal(err)
	}
	edge := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: "e"})
	js, err := jetstream.New(edge.NATS(), jetstream.WithDefaultTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream := "KV_" + bus.BucketCompiled

	for _, c := range []struct {
		name string
		cfg  jetstream.ConsumerConfig
		want string
	}{
		{"a durable consumer that would never expire", jetstream.ConsumerConfig{Durable: "forever", InactiveThreshold: 24 * time.Hour, AckPolicy: jetstream.AckExplicitPolicy}, "inactive threshold"},
		{"a consumer holding more than its share unacknowledged", jetstream.ConsumerConfig{Name: "greedy", MaxAckPending: 1_000_000, AckPolicy: jetstream.AckExplicitPolicy}, "max ack pending"},
	} {
		_, err := js.CreateConsumer(ctx, stream, c.cfg)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), c.want) {
			t.Errorf("%s: %v, want a refusal naming %q", c.name, err, c.want)
		}
	}
	// A durable consumer asking for no threshold gets the stream's.
	d, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "left-behind", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.CachedInfo().Config.InactiveThreshold; got != bus.ConsumerInactiveLimit {
		t.Errorf("a durable consumer's inactive threshold is %s, want the stream's %s", got, bus.ConsumerInactiveLimit)
	}

	// The mesh's own readers: a watch is an ordered consumer within the limits.
	st, err := edge.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(ctx, ">")
	if err != nil {
		t.Fatalf("a watch within the limits: %v", err)
	}
	defer w.Stop()

	// Then consumers up to the limit, and no more.
	made := 2 // the durable one and the watch
	for i := 0; ; i++ {
		_, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			if !strings.Contains(strings.ToLower(err.Error()), "maximum consumers limit") {
				t.Fatalf("consumer %d refused with %v, want the maximum consumers limit", made+1, err)
			}
			break
		}
		made++
		if i > 100 {
			t.Fatal("a reader created 100 consumers past the limit")
		}
	}
	if made != limit {
		t.Errorf("a reader created %d consumers, want the limit %d", made, limit)
	}
}
