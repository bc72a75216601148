package stack

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/bus"
)

// TestWatchOutlivesTheServerOfItsConsumer: a watch on a bucket with three
// replicas goes on delivering after the server holding its consumer is
// killed (SIGKILL), again and again (issue 15, F2). Each round kills the
// server of the watch's newest consumer, writes a key through the other
// two, and wants the watch to deliver it within recoverWithin, before the
// server is started again.
//
// With nats.go's ordered consumer the watch hung in about one round of
// three, until the killed server returned: the consumer lost with it was
// recreated under the same name every time, and when the cluster had
// placed that name on the server just killed (not yet known to be gone,
// so still a candidate), the creation was an update of a consumer no live
// server held: never answered, retried under the same name, 10 s each,
// while the watch's Next stayed blocked in those retries. In CI this left
// the edges or the compiler deaf for the minute TestF2NATSNodeKilled kept
// a server down.
func TestWatchOutlivesTheServerOfItsConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server")
	}
	const (
		rounds        = 6
		recoverWithin = 30 * time.Second
	)
	ctx := t.Context()
	n, err := StartNATS(ctx, NATSOptions{Servers: 3, StoreDir: t.TempDir(), Builder: NewBuilder(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const bucket = "watch-kill"
	st, err := n.Admin().EnsureBucket(ctx, bucket, bus.BucketOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(ctx, ">")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	seen := map[string]uint64{} // key → last revision delivered
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for e := range w.Events() {
			if e.Kind == bus.EventPut {
				mu.Lock()
				seen[e.Key] = e.Revision
				mu.Unlock()
			}
		}
	}()
	// put writes key, retried while the cluster elects leaders, and waits
	// until the watch delivers that revision.
	put := func(key string, within time.Duration) (time.Duration, error) {
		start := time.Now()
		var rev uint64
		err := Eventually(ctx, 30*time.Second, func() error {
			var err error
			rev, err = st.Put(ctx, key, wrapperspb.String(key))
			return err
		})
		if err != nil {
			return 0, err
		}
		err = Eventually(ctx, within, func() error {
			select {
			case <-ended:
				return fmt.Errorf("the watch ended: %v", w.Err())
			default:
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[key] < rev {
				return fmt.Errorf("%s at revision %d not delivered (have %d)", key, rev, seen[key])
			}
			return nil
		})
		return time.Since(start), err
	}
	js := n.Admin().JetStream()
	for round := range rounds {
		if _, err := put(fmt.Sprintf("before-%d", round), 10*time.Second); err != nil {
			t.Fatalf("round %d, before the kill: %v", round, err)
		}
		// The watch's consumer is the newest one: each replacement
		// creates a consumer.
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		holder, newest := "", time.Time{}
		for ci := range s.ListConsumers(ctx).Info() {
			if ci.Cluster != nil && ci.Cluster.Leader != "" && ci.Created.After(newest) {
				holder, newest = ci.Cluster.Leader, ci.Created
			}
		}
		victim := -1
		for i := range n.Servers() {
			if n.ServerName(i) == holder {
				victim = i
			}
		}
		if victim < 0 {
			t.Fatalf("round %d: no server holds the watch's consumer (newest on %q)", round, holder)
		}
		killed := time.Now()
		if err := n.Kill(victim); err != nil {
			t.Fatal(err)
		}
		took, err := put(fmt.Sprintf("after-%d", round), recoverWithin)
		if err != nil {
			t.Errorf("round %d: %s, which held the watch's consumer, killed %s ago: %v", round, holder, time.Since(killed).Round(time.Millisecond), err)
			return
		}
		t.Logf("round %d: killed %s, which held the watch's consumer; the next write delivered %s after the kill", round, holder, took.Round(time.Millisecond))
		if err := n.StartServer(ctx, victim); err != nil {
			t.Fatal(err)
		}
	}
}
