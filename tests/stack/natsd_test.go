package stack

import (
	"context"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestNATSServers: nats-server processes keep their JetStream store across
// a SIGKILL; a cluster of three declares the buckets with three replicas
// and keeps taking writes with one server killed, which catches up when it
// is started again.
func TestNATSServers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server")
	}
	b := NewBuilder(t.TempDir())
	for _, servers := range []int{1, 3} {
		n, err := StartNATS(t.Context(), NATSOptions{Servers: servers, StoreDir: t.TempDir(), Builder: b})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		kv, err := n.Admin().Bucket(t.Context(), bus.BucketTrust)
		if err != nil {
			t.Fatal(err)
		}
		st, err := n.Admin().JetStream().Stream(t.Context(), "KV_"+bus.BucketTrust)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Replicas; got != min(servers, 3) {
			t.Errorf("%d servers: %s has %d replicas", servers, bus.BucketTrust, got)
		}
		put := func(v string) uint64 {
			t.Helper()
			var rev uint64
			err := Eventually(t.Context(), 30*time.Second, func() error {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				var err error
				rev, err = kv.Put(ctx, layout.BundleKey, &meshv1.TrustBundle{Version: v})
				return err
			})
			if err != nil {
				t.Fatalf("%d servers: put %s: %v", servers, v, err)
			}
			return rev
		}
		put("1")
		if err := n.Kill(0); err != nil {
			t.Fatal(err)
		}
		if servers > 1 {
			put("2") // the quorum holds
		}
		if err := n.StartServer(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		rev := put("3")
		got := &meshv1.TrustBundle{}
		if _, err := kv.Get(t.Context(), layout.BundleKey, got); err != nil || got.GetVersion() != "3" {
			t.Errorf("%d servers: after the kill and restart: %v, %v", servers, got, err)
		}
		if want := map[int]uint64{1: 2, 3: 3}[servers]; rev != want {
			t.Errorf("%d servers: revision %d after the restart, want %d (a revision lost)", servers, rev, want)
		}
	}
}
