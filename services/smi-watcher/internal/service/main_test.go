package service_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/logging"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/service"
	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is the package's real control plane (kube-apiserver, etcd and the
// endpointslice controller), with the SMI and MeshConfig CRDs installed.
var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, true)) }

// env is one test's world: its own NATS server and bucket, its own mesh
// name and control-plane namespace, on the shared cluster.
type env struct {
	t     testing.TB
	nats  *bustest.Server
	conn  *bus.Conn
	store *bus.Store
	mesh  string
	cp    string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	store, err := conn.EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{
		t: t, nats: srv, conn: conn, store: store,
		mesh: "mesh-" + rand.String(6),
		cp:   cluster.Namespace(t, "osm-system", nil),
	}
}

// instance is one running smi-watcher, started through the same runner and
// flags as the binary.
type instance struct {
	id     string
	admin  string
	cancel context.CancelFunc
	done   <-chan error
	logs   *logging.Buffer
	once   sync.Once
}

// start runs a watcher until the test ends or stop is called.
func (e *env) start(id string, extra ...string) *instance {
	e.t.Helper()
	in := &instance{id: id, admin: apptest.FreeAddr(e.t)}
	args := append([]string{
		"--kubeconfig", cluster.KubeconfigPath(),
		"--nats-url", e.nats.URL(),
		"--admin-addr", in.admin,
		"--mesh-name", e.mesh,
		"--namespace", e.cp,
		"--pod-name", id,
		"--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "250ms",
		"--log-format", "text", "--log-level", "debug",
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	in.done, in.logs = apptest.Start(ctx, service.Spec(service.Options{}), args, nil)
	e.t.Cleanup(func() {
		in.stop(e.t)
		if e.t.Failed() {
			e.t.Logf("logs of watcher %s:\n%s", id, in.logs.String())
		}
	})
	return in
}

// stop cancels the watcher and waits for it; calling it twice is harmless.
func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.once.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil {
				t.Errorf("watcher %s: %v", in.id, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("watcher %s did not stop", in.id)
		}
	})
}

// marker reads the sync marker; nil when absent.
func (e *env) marker() *meshv1.SyncMarker {
	var m meshv1.SyncMarker
	if _, err := e.store.Get(context.Background(), layout.SyncKey, &m); err != nil {
		return nil
	}
	return &m
}

// waitSynced waits for a SYNCED marker with an epoch above after.
func (e *env) waitSynced(after uint64, timeout time.Duration) *meshv1.SyncMarker {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := e.marker(); m != nil && m.Epoch > after && m.State == meshv1.SyncState_SYNC_STATE_SYNCED {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("no SYNCED marker with an epoch above %d within %s (last: %v)", after, timeout, e.marker())
	return nil
}

// lastSeq is the bucket stream's last sequence: it grows by one for every
// put or delete anyone writes.
func (e *env) lastSeq() uint64 {
	e.t.Helper()
	s, err := e.conn.JetStream().Stream(context.Background(), "KV_"+bus.BucketObserved)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.LastSeq
}

// newMessage returns an empty message of the type stored under an
// observed key of kind.
func newMessage(kind string) proto.Message { return layout.NewObserved(kind) }

// contents reads every key of the bucket except the sync marker and the
// writer's fence, decoded.
func (e *env) contents() map[string]proto.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := e.store.Watch(ctx, ">")
	if err != nil {
		e.t.Fatal(err)
	}
	defer w.Stop()
	out := map[string]proto.Message{}
	for ev := range w.Events() {
		switch ev.Kind {
		case bus.EventInitialized:
			return out
		case bus.EventPut:
			if ev.Key == layout.SyncKey || ev.Key == bus.FenceKey {
				continue
			}
			o, err := layout.ParseObserved(ev.Key)
			if err != nil {
				e.t.Fatalf("unexpected key %q: %v", ev.Key, err)
			}
			m := newMessage(o.Kind)
			if m == nil {
				e.t.Fatalf("key %q of unknown kind", ev.Key)
			}
			if err := ev.Decode(m); err != nil {
				e.t.Fatal(err)
			}
			out[ev.Key] = m
		}
	}
	e.t.Fatalf("watch of the bucket ended: %v", w.Err())
	return nil
}

// keysUnder lists the content's keys that mention namespace ns.
func keysUnder(c map[string]proto.Message, ns string) []string {
	var out []string
	for k := range c {
		if o, err := layout.ParseObserved(k); err == nil && (o.Namespace == ns || (o.Kind == layout.KindNamespace && o.Name == ns)) {
			out = append(out, k)
		}
	}
	return out
}

// quiesce waits until the bucket has seen no write for quiet.
func (e *env) quiesce(quiet time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last, since := e.lastSeq(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if s := e.lastSeq(); s != last {
			last, since = s, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
	e.t.Fatal("the bucket never went quiet")
}
