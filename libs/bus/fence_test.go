package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

// TestDeposedWriterWritesNothing (issue 15, item 4): once a newer writer
// claims the bucket, nothing the older one sends lands — a put, a delete,
// a pipelined batch — however long it stalled; the refusal is ErrFenced.
// Claims themselves are compare-and-set: no term is claimed twice, and no
// older term after a newer one.
func TestDeposedWriterWritesNothing(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	ctx := t.Context()
	open := func() *bus.Store {
		c := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
		st, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{Memory: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	old, next := open(), open()
	if err := old.Claim(ctx, 1, "watcher-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Put(ctx, "k1", str("old-1")); err != nil {
		t.Fatalf("the writer of term 1 cannot write: %v", err)
	}
	if _, err := old.Put(ctx, "k2", str("old-2")); err != nil {
		t.Fatal(err)
	}

	// A standby takes over (term 2) while the old writer is stalled.
	if err := next.Claim(ctx, 1, "watcher-b"); !errors.Is(err, bus.ErrFenced) {
		t.Fatalf("a second claim of term 1: %v, want ErrFenced", err)
	}
	if err := next.Claim(ctx, 2, "watcher-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Put(ctx, "k1", str("new-1")); err != nil {
		t.Fatalf("the writer of term 2 cannot write: %v", err)
	}

	// The old writer wakes up and writes: nothing lands.
	if _, err := old.Put(ctx, "k1", str("old-late")); !errors.Is(err, bus.ErrFenced) {
		t.Errorf("late put: %v, want ErrFenced", err)
	}
	if err := old.Delete(ctx, "k2"); !errors.Is(err, bus.ErrFenced) {
		t.Errorf("late delete: %v, want ErrFenced", err)
	}
	b := old.Batch()
	for _, k := range []string{"k1", "k3", "k4"} {
		if err := b.Put(ctx, k, str("old-batch")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); !errors.Is(err, bus.ErrFenced) {
		t.Errorf("late batch: %v, want ErrFenced", err)
	}
	if err := old.Claim(ctx, 1, "watcher-a"); !errors.Is(err, bus.ErrFenced) {
		t.Errorf("reclaiming an older term: %v, want ErrFenced", err)
	}
	want := map[string]string{"k1": "new-1", "k2": "old-2"}
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		got := &wrapperspb.StringValue{}
		_, err := next.Get(ctx, k, got)
		switch {
		case want[k] == "" && !errors.Is(err, bus.ErrNotFound):
			t.Errorf("%s = %q (%v), want absent: a deposed write landed", k, got.GetValue(), err)
		case want[k] != "" && got.GetValue() != want[k]:
			t.Errorf("%s = %q (%v), want %q", k, got.GetValue(), err, want[k])
		}
	}
	if next.Term() != 2 || old.Term() != 1 {
		t.Errorf("terms %d and %d", old.Term(), next.Term())
	}
	if sup, err := old.Superseded(ctx); err != nil || !sup {
		t.Errorf("the deposed writer is superseded = %v (%v), want true", sup, err)
	}
	if sup, err := next.Superseded(ctx); err != nil || sup {
		t.Errorf("the current writer is superseded = %v (%v), want false", sup, err)
	}
	if lost, err := old.ClaimLost(ctx); err != nil || lost {
		t.Errorf("the deposed writer's claim lost = %v (%v), want false: it was superseded", lost, err)
	}
}

// TestFenceLostWithTheBucket: when the bucket is deleted and recreated, a
// writer's claim is gone with it; its writes are refused (the fence no
// longer matches), it is not superseded, and it may claim again.
func TestFenceLostWithTheBucket(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	ctx := t.Context()
	c := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	st, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Claim(ctx, 3, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.JetStream().DeleteKeyValue(ctx, bus.BucketObserved); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "k", str("v")); !errors.Is(err, bus.ErrFenced) {
		t.Fatalf("a write after the bucket was recreated: %v, want ErrFenced", err)
	}
	if sup, err := st.Superseded(ctx); err != nil || sup {
		t.Errorf("superseded = %v (%v), want false: the claim went with the bucket", sup, err)
	}
	if lost, err := st.ClaimLost(ctx); err != nil || !lost {
		t.Errorf("claim lost = %v (%v), want true", lost, err)
	}
	if err := st.Claim(ctx, 3, "a"); err != nil {
		t.Fatalf("claiming again in a recreated bucket: %v", err)
	}
	if _, err := st.Put(ctx, "k", str("v")); err != nil {
		t.Fatal(err)
	}
	if sup, err := st.Superseded(ctx); err != nil || sup {
		t.Errorf("superseded = %v (%v), want false", sup, err)
	}
	if lost, err := st.ClaimLost(ctx); err != nil || lost {
		t.Errorf("claim lost = %v (%v) after claiming again, want false", lost, err)
	}
}

// TestGoneOnlyWhenTheBucketIs: Gone is true once the bucket's stream is
// deleted, false while it exists, and an error, not true, while NATS does
// not answer (what a writer sees while a replicated bucket elects a leader
// must not make it start a new epoch).
func TestGoneOnlyWhenTheBucketIs(t *testing.T) {
	srv := startServer(t, bustest.Options{StoreDir: t.TempDir()})
	ctx := t.Context()
	c := connect(t, bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	st, err := c.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gone, err := st.Gone(ctx); err != nil || gone {
		t.Fatalf("gone = %v (%v) for a bucket that exists", gone, err)
	}
	srv.Stop()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	gone, err := st.Gone(sctx)
	cancel()
	if gone || err == nil || !strings.Contains(err.Error(), bus.BucketObserved) {
		t.Fatalf("gone = %v (%v) while NATS is down, want an error naming the bucket", gone, err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	apptest.EventuallyTrue(t, "the bucket found after the restart", 20*time.Second, func() bool {
		g, err := st.Gone(ctx)
		return err == nil && !g
	})
	if err := c.JetStream().DeleteKeyValue(ctx, bus.BucketObserved); err != nil {
		t.Fatal(err)
	}
	if gone, err := st.Gone(ctx); err != nil || !gone {
		t.Fatalf("gone = %v (%v) for a deleted bucket", gone, err)
	}
}
