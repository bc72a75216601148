package service_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestDeposedWatcherWritesNothing (issue 15, item 4): a leading watcher
// that stalls past its lease while a newer one claims the bucket (here the
// newer claim is made directly, as the standby's takeover does first) keeps
// running and keeps trying to write; the server refuses every write of its
// epoch: zero writes of the old term land after the new term starts.
func TestDeposedWatcherWritesNothing(t *testing.T) {
	defer recoverMust(t)
	e, f, a, first := leadingWatcher(t, "fence", "10.244.14.10")

	// The standby's takeover claims the next epoch; watcher-a does not know.
	if err := e.store.Claim(t.Context(), first.Epoch+1, "watcher-b"); err != nil {
		t.Fatal(err)
	}
	claimed := e.lastSeq()

	// A change watcher-a would write.
	ctx := t.Context()
	cs := cluster.Clientset()
	svc := must(cs.CoreV1().Services(f.ns).Get(ctx, "bookstore", metav1.GetOptions{}))
	svc.Labels = map[string]string{"edited": "after-the-claim"}
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "extra", Port: 9999})
	must(cs.CoreV1().Services(f.ns).Update(ctx, svc, metav1.UpdateOptions{}))
	apptest.EventuallyTrue(t, "watcher-a to try the write and be refused", 20*time.Second, func() bool {
		return strings.Contains(a.logs.String(), "write refused: a newer watcher leads the bucket")
	})
	if got := e.lastSeq(); got != claimed {
		t.Errorf("the deposed watcher's writes landed: the bucket went from sequence %d to %d", claimed, got)
	}
	key := layout.ObservedKey(layout.KindService, f.ns, "bookstore")
	if got := e.contents()[key]; strings.Contains(prototext.Format(got), "9999") {
		t.Errorf("the bucket holds the deposed watcher's %s: %v", key, got)
	}
}

// TestWatcherRewritesALostBucket (issue 15, item 2, the watcher's side):
// mesh-observed is deleted while a watcher leads (an operator's mistake, or
// a JetStream volume lost), with nothing changing in the cluster. Within
// its claim check (2 s) the watcher ends its term, declares the bucket
// again and starts a new epoch that writes everything, so the compiler can
// rebuild the whole mesh.
func TestWatcherRewritesALostBucket(t *testing.T) {
	defer recoverMust(t)
	const ip = "10.244.15.10"
	e, f, _, _ := leadingWatcher(t, "lost", ip)

	ctx := t.Context()
	if err := e.conn.JetStream().DeleteKeyValue(ctx, bus.BucketObserved); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	// Nothing changes in the cluster: the watcher notices on its own.
	e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	t.Logf("the bucket was whole again %s after it was deleted", time.Since(lost).Round(time.Millisecond))
}

// leadingWatcher seeds a meshed namespace (prefix, a pod at ip) and starts
// watcher-a, returning once it leads and the bucket holds the namespace.
func leadingWatcher(t *testing.T, prefix, ip string) (*env, *fixture, *instance, *meshv1.SyncMarker) {
	t.Helper()
	e := newEnv(t)
	f := e.seed(prefix, ip)
	e.createMeshConfig()
	a := e.start("watcher-a")
	first := e.waitSynced(0, time.Minute)
	e.waitContent(f.ns, func() (map[string]proto.Message, error) {
		want := f.expected()
		return want, f.expectSlice(t, want, ip)
	})
	return e, f, a, first
}
