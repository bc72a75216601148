package service

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// TestRotationAcrossServiceRestarts performs the documented root rotation
// as a user would: each step is a configuration edit and a restart of the
// real service. It checks the bundle in KV mesh-trust after each, that
// repeating a step rewrites nothing, and that leaves of the old root stay
// valid through the overlap and stop being trusted only at step 3.
func TestRotationAcrossServiceRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ns := cluster.Namespace(t, "osm-rotate", nil)
	nats, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()
	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const dev = "rotation-dev-token"

	// step runs the service with flags until it has published its bundle,
	// signs one workload CSR, and stops it.
	step := func(name string, flags ...string) (*meshv1.TrustBundle, uint64, *x509.Certificate) {
		t.Helper()
		svc := runService(t, nats.URL(), map[string]string{"OSM_DEV_BOOTSTRAP_TOKEN": dev}, append([]string{"--namespace", ns, "--log-level", "warn"}, flags...)...)
		defer func() {
			if err := svc.stop(); err != nil {
				t.Errorf("%s: service stopped with %v", name, err)
			}
		}()
		apptest.Eventually(t, name+": ready", 30*time.Second, svc.ready)
		b, rev, err := kvBundle(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		edge, csr := svc.devEdge(ctx, t, b, dev)
		resp, err := edge.Sign(ctx, &cav1.SignRequest{Csr: csr, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE})
		if err != nil {
			t.Fatalf("%s: sign: %v", name, err)
		}
		leaf, err := pki.ParseCertificatePEM(resp.CertificateChainPem)
		if err != nil {
			t.Fatal(err)
		}
		return b, rev, leaf
	}
	signing := func(b *meshv1.TrustBundle) string {
		for _, r := range b.Roots {
			if r.Signing {
				return r.Id
			}
		}
		return ""
	}

	b0, _, leaf0 := step("before", "--root-secret", "root-a")
	rootA := signing(b0)
	if len(b0.Roots) != 1 || rootA == "" {
		t.Fatalf("before: %v", b0.Roots)
	}

	b1, rev1, leaf1 := step("step 1", "--root-secret", "root-a", "--trusted-root-secrets", "root-b")
	if len(b1.Roots) != 2 || signing(b1) != rootA || verifyLeaf(b1, leaf0) != nil || verifyLeaf(b1, leaf1) != nil {
		t.Fatalf("step 1: %d roots, signing %s (want %s)", len(b1.Roots), signing(b1), rootA)
	}
	b1again, rev1again, _ := step("step 1 again", "--root-secret", "root-a", "--trusted-root-secrets", "root-b")
	if b1again.Version != b1.Version || rev1again != rev1 {
		t.Errorf("repeating step 1 rewrote the bundle: version %s -> %s, revision %d -> %d", b1.Version, b1again.Version, rev1, rev1again)
	}

	b2, _, leaf2 := step("step 2", "--root-secret", "root-b", "--trusted-root-secrets", "root-a")
	rootB := signing(b2)
	if len(b2.Roots) != 2 || rootB == rootA || rootB == "" {
		t.Fatalf("step 2: %d roots, signing %s", len(b2.Roots), rootB)
	}
	if err := verifyLeaf(b2, leaf0); err != nil {
		t.Errorf("step 2: a leaf of the old root is no longer trusted during the overlap: %v", err)
	}
	if err := verifyLeaf(b2, leaf2); err != nil {
		t.Errorf("step 2: %v", err)
	}
	if err := verifyLeaf(&meshv1.TrustBundle{Roots: []*meshv1.TrustRoot{rootOf(b2, rootB)}}, leaf2); err != nil {
		t.Errorf("step 2: the new leaf does not chain to the new root: %v", err)
	}

	b3, _, leaf3 := step("step 3", "--root-secret", "root-b")
	if len(b3.Roots) != 1 || signing(b3) != rootB {
		t.Fatalf("step 3: %v", b3.Roots)
	}
	if err := verifyLeaf(b3, leaf2); err != nil {
		t.Errorf("step 3: %v", err)
	}
	if err := verifyLeaf(b3, leaf3); err != nil {
		t.Errorf("step 3: %v", err)
	}
	if err := verifyLeaf(b3, leaf0); err == nil {
		t.Error("step 3: a leaf of the removed root is still trusted")
	} else if !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Errorf("step 3: old leaf: %v, want unknown authority", err)
	}
}

func rootOf(b *meshv1.TrustBundle, id string) *meshv1.TrustRoot {
	for _, r := range b.Roots {
		if r.Id == id {
			return r
		}
	}
	return nil
}
