package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

// TestReaderPushDeliveryReachesNoStatusSubscriber (fault F13): a reader
// role may create consumers on the buckets it reads, and a push consumer
// names its delivery subject freely; one aimed at mesh.status.policy.*
// must not reach the watcher (or anyone) subscribed there, else a reader
// could feed it forged statuses. nats-server accepts such a consumer but
// delivers nothing to those subscribers; this test keeps it that way across
// server upgrades. A push consumer on the reader's own inbox delivers, so
// the check is not vacuous.
func TestReaderPushDeliveryReachesNoStatusSubscriber(t *testing.T) {
	pw := map[bus.Role]string{bus.RoleAdmin: "a", bus.RoleEdge: "e", bus.RoleCompiler: "c", bus.RoleWatcher: "w"}
	srv := startServer(t, bustest.Options{Passwords: pw})
	ctx := t.Context()
	compiler := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleCompiler, User: "compiler", Password: "c"})
	cst, err := compiler.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cst.Put(ctx, "generation", str("1")); err != nil {
		t.Fatal(err)
	}
	forged := make(chan *nats.Msg, 10)
	for _, r := range []bus.Role{bus.RoleWatcher, bus.RoleAdmin} {
		c := connect(t, bus.Options{URL: srv.URL(), Role: r, User: string(r), Password: pw[r]})
		if _, err := c.NATS().Subscribe(bus.SubjectPolicyStatus+".>", func(m *nats.Msg) { forged <- m }); err != nil {
			t.Fatal(err)
		}
		if err := c.NATS().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	edge := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: "e"})
	js, err := edge.NATS().JetStream()
	if err != nil {
		t.Fatal(err)
	}
	own := make(chan *nats.Msg, 10)
	inbox := bus.RoleEdge.InboxPrefix() + ".push"
	if _, err := edge.NATS().Subscribe(inbox, func(m *nats.Msg) { own <- m }); err != nil {
		t.Fatal(err)
	}
	for _, deliver := range []string{bus.SubjectPolicyStatus + ".TrafficTarget.ns.forged", inbox} {
		if _, err := js.AddConsumer("KV_"+bus.BucketCompiled, &nats.ConsumerConfig{DeliverSubject: deliver, AckPolicy: nats.AckExplicitPolicy}); err != nil {
			t.Logf("push consumer onto %s refused: %v", deliver, err)
		}
	}
	select {
	case <-own:
	case <-time.After(5 * time.Second):
		t.Fatal("a push consumer on the edge's own inbox delivered nothing; the check below proves nothing")
	}
	select {
	case m := <-forged:
		t.Fatalf("a reader's push consumer delivered %s onto %s to a status subscriber", m.Subject, m.Sub.Subject)
	case <-time.After(time.Second):
	}
}
