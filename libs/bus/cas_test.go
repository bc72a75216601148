package bus_test

import (
	"errors"
	"github.com/openservicemesh/osm/libs/bus"
	"strconv"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCreateUpdateConflicts(t *testing.T) {
	c, _, _ := watched(t, bus.BucketObserved)
	ctx := t.Context()
	st, err := c.EnsureBucket(ctx, bus.BucketLeases, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Create(ctx, "compiler", str("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "compiler", str("b")); !errors.Is(err, bus.ErrConflict) {
		t.Fatalf("second create: %v, want bus.ErrConflict", err)
	}
	next, err := st.Update(ctx, "compiler", str("a2"), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, "compiler", str("stale"), rev); !errors.Is(err, bus.ErrConflict) {
		t.Fatalf("stale update: %v, want bus.ErrConflict", err)
	}
	var v wrapperspb.StringValue
	if got, err := st.Get(ctx, "compiler", &v); err != nil || got != next || v.Value != "a2" {
		t.Fatalf("after updates: %q rev %d (%v), want a2 rev %d", v.Value, got, err, next)
	}
	if err := st.Delete(ctx, "compiler"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "compiler", str("c")); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func TestBatch(t *testing.T) {
	_, st, w := watched(t, bus.BucketCompiled)
	ctx := t.Context()
	next(t, w) // initialized
	const n = 3000
	b := st.Batch()
	for i := range n {
		if queued, err := b.PutIfChanged(ctx, "k"+strconv.Itoa(i), str(strconv.Itoa(i))); err != nil || !queued {
			t.Fatalf("queue %d: %v %v", i, queued, err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ev := next(t, w)
		var v wrapperspb.StringValue
		if err := ev.Decode(&v); err != nil || ev.Key != "k"+strconv.Itoa(i) || v.Value != strconv.Itoa(i) {
			t.Fatalf("event %d: %s %q (%v): writes out of order or lost", i, ev.Key, v.Value, err)
		}
	}
	// Unchanged values and absent keys queue nothing.
	b = st.Batch()
	if queued, _ := b.PutIfChanged(ctx, "k7", str("7")); queued {
		t.Fatal("queued an unchanged value")
	}
	if queued, _ := b.DeleteIfPresent(ctx, "absent"); queued {
		t.Fatal("queued a delete of an absent key")
	}
	if queued, _ := b.DeleteIfPresent(ctx, "k8"); !queued {
		t.Fatal("did not queue a delete of a present key")
	}
	if queued, _ := b.PutIfChanged(ctx, "k9", str("nine")); !queued {
		t.Fatal("did not queue a changed value")
	}
	if b.Len() != 2 {
		t.Fatalf("queued %d, want 2", b.Len())
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.Kind != bus.EventDelete || ev.Key != "k8" {
		t.Fatalf("got %s %s, want delete k8", ev.Kind, ev.Key)
	}
	if ev := next(t, w); ev.Kind != bus.EventPut || ev.Key != "k9" {
		t.Fatalf("got %s %s, want put k9", ev.Kind, ev.Key)
	}
	expectQuiet(t, w)
}
