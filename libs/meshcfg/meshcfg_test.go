package meshcfg

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

var passwords = map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleEdge: "edge-pw"}

// applied records the Apply calls: nil for "no MeshConfig", else the
// validity.
type applied struct {
	mu    sync.Mutex
	calls []string
}

func (a *applied) apply(mc *meshv1.MeshConfig) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if mc == nil {
		a.calls = append(a.calls, "none")
		return
	}
	a.calls = append(a.calls, mc.GetCertificate().GetServiceCertValidityDuration().AsDuration().String())
}

func (a *applied) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.calls) == 0 {
		return ""
	}
	return a.calls[len(a.calls)-1]
}

// TestFollowerBeforeTheBucketExists: while mesh-observed does not exist
// there is no MeshConfig, and the follower says so at once (so that the
// edge's first certificates need not wait for one); once the bucket is
// declared and the MeshConfig written, it follows it, with the edge's
// own NATS role.
func TestFollowerBeforeTheBucketExists(t *testing.T) {
	srv, err := bustest.Start(bustest.Options{Passwords: passwords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn := func(r bus.Role) *bus.Conn {
		c, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: r, User: string(r), Password: passwords[r]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	a := &applied{}
	f, err := New(Options{Conn: conn(bus.RoleEdge), Namespace: "osm-system", Name: "osm-mesh-config", Apply: a.apply, Log: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	xdstest.WaitFor(t, "no MeshConfig while the bucket is missing", func() bool { return a.last() == "none" })

	observed, err := conn(bus.RoleAdmin).EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mc := &meshv1.MeshConfig{Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(2 * time.Hour)}}
	if _, err := observed.Put(ctx, layout.ObservedKey(layout.KindMeshConfig, "osm-system", "osm-mesh-config"), mc); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitFor(t, "the MeshConfig once written", func() bool { return a.last() == "2h0m0s" })
}
