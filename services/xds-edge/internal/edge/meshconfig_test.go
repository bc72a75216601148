package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// refusingSigner signs nothing: these tests look at the lifetime the
// issuer is given, not at certificates.
type refusingSigner struct{}

func (refusingSigner) Sign(context.Context, *cav1.SignRequest, ...grpc.CallOption) (*cav1.SignResponse, error) {
	return nil, errors.New("not in this test")
}

// TestEdgeFollowsTheMeshConfigCertificateValidity: an edge started with
// a MeshConfig name takes spec.certificate.serviceCertValidityDuration
// from the MeshConfig's key in KV mesh-observed (written here as the
// smi-watcher does) as its service certificates' lifetime: first the
// bucket's value, then each edit; a value under a minute is raised to a
// minute; an invalid one keeps the last; another MeshConfig is ignored;
// deleting it (or the field) falls back to none (the CA's default).
func TestEdgeFollowsTheMeshConfigCertificateValidity(t *testing.T) {
	m := seededMesh(t, "")
	ctx := t.Context()
	observed, err := m.conn(bus.RoleAdmin).EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := layout.ObservedKey(layout.KindMeshConfig, "osm-system", "osm-mesh-config")
	put := func(k string, mc *meshv1.MeshConfig) {
		t.Helper()
		if _, err := observed.Put(ctx, k, mc); err != nil {
			t.Fatal(err)
		}
	}
	validity := func(d time.Duration) *meshv1.MeshConfig {
		return &meshv1.MeshConfig{Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(d)}}
	}
	put(key, validity(2*time.Hour))

	tc, err := m.pki.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e, err := New(Deps{
		Log: logrus.NewEntry(log), Conn: m.conn(bus.RoleEdge), Listener: ln, EdgeID: "edge-1", TrustDomain: "cluster.local",
		GRPC:              xds.GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Second},
		NATSLostThreshold: time.Minute, StopGrace: time.Second,
		Signer: refusingSigner{}, CertTTL: time.Hour, MeshConfigNamespace: "osm-system", MeshConfigName: "osm-mesh-config",
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Start(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	lifetime := func(what string, want time.Duration) {
		t.Helper()
		xdstest.WaitFor(t, what, func() bool { return e.issuer.Lifetime() == want })
	}
	lifetime("the MeshConfig's 2h", 2*time.Hour)
	put(key, validity(3*time.Hour))
	lifetime("the edited 3h", 3*time.Hour)
	put(layout.ObservedKey(layout.KindMeshConfig, "osm-system", "another-mesh-config"), validity(5*time.Hour))
	put(key, validity(10*time.Second))
	lifetime("10s raised to the 1m minimum", time.Minute)
	put(key, &meshv1.MeshConfig{InvalidFields: []*meshv1.InvalidField{{FieldPath: caclient.FieldServiceCertValidity, Value: "two hours", Message: "not a duration"}}})
	put(key, validity(-time.Hour))
	put(key, validity(4*time.Hour)) // a marker: the invalid ones came before it
	lifetime("4h after two invalid values", 4*time.Hour)
	put(key, &meshv1.MeshConfig{InvalidFields: []*meshv1.InvalidField{{FieldPath: caclient.FieldServiceCertValidity, Value: "two hours", Message: "not a duration"}}})
	time.Sleep(300 * time.Millisecond)
	if got := e.issuer.Lifetime(); got != 4*time.Hour {
		t.Fatalf("an invalid validity changed the lifetime to %s; want the last good 4h", got)
	}
	put(key, &meshv1.MeshConfig{})
	lifetime("no validity: none", 0)
	put(key, validity(2*time.Hour))
	lifetime("2h again", 2*time.Hour)
	if err := observed.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	lifetime("deleted: none", 0)
}
