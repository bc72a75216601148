package bus_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

func TestPublishCarriesTheTraceContext(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	c := connect(t, bus.Options{URL: srv.URL()})
	msgs := make(chan *nats.Msg, 1)
	sub, err := c.NATS().ChanSubscribe("mesh.status.policy.>", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	if err := bus.Publish(ctx, c.NATS(), "mesh.status.policy.traffictarget.ns.tt", wrapperspb.String("rejected")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if got := m.Header.Get("traceparent"); !strings.Contains(got, tid.String()) {
			t.Errorf("traceparent %q, want trace %s", got, tid)
		}
		got := trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), m.Header))
		if got.TraceID() != tid || got.SpanID() != sid {
			t.Errorf("extracted %+v", got)
		}
		var v wrapperspb.StringValue
		if err := proto.Unmarshal(m.Data, &v); err != nil || v.GetValue() != "rejected" {
			t.Errorf("payload %q: %v", v.GetValue(), err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
}

func TestPublishErrorNamesTheSubject(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	c := connect(t, bus.Options{URL: srv.URL()})
	c.Close()
	err := bus.Publish(t.Context(), c.NATS(), "mesh.status.proxy.e.p", wrapperspb.String("x"))
	if err == nil || !strings.Contains(err.Error(), "mesh.status.proxy.e.p") {
		t.Errorf("publish on a closed connection: err = %v", err)
	}
}

func TestWaitBucketWaitsForItsWriter(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	reader := connect(t, bus.Options{URL: srv.URL()})
	writer := connect(t, bus.Options{URL: srv.URL()})
	var waits atomic.Int32
	opened := make(chan error, 1)
	go func() {
		s, err := reader.WaitBucket(t.Context(), bus.BucketObserved, func(error) { waits.Add(1) })
		if err == nil && s == nil {
			err = context.Canceled
		}
		opened <- err
	}()
	time.Sleep(700 * time.Millisecond)
	select {
	case err := <-opened:
		t.Fatalf("returned before the bucket existed: %v", err)
	default:
	}
	if _, err := writer.EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the bucket did not open after its writer declared it")
	}
	if n := waits.Load(); n != 1 {
		t.Errorf("waiting was told %d times in under a second, want once", n)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := reader.WaitBucket(ctx, "no-such-bucket", nil); err == nil || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("a wait that ends with its context: err = %v", err)
	}
}
