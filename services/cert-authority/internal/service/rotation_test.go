package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/logging"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
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
		lis := listen(t)
		admin := freeAddr(t)
		args := append([]string{"--namespace", ns, "--nats-url", nats.URL(), "--admin-addr", admin, "--kubeconfig", cluster.KubeconfigPath(),
			"--server-dns-names", "ca.test", "--log-level", "warn"}, flags...)
		env := func(k string) string {
			if k == "OSM_DEV_BOOTSTRAP_TOKEN" {
				return dev
			}
			return ""
		}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- app.Run(runCtx, Spec(Deps{Listener: lis}), args, env, &logging.Buffer{}) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("%s: service stopped with %v", name, err)
			}
		}()
		waitFor(t, name+": ready", func() error { return httpGet(ctx, "http://"+admin+"/readyz", nil) })
		store, err := conn.Bucket(ctx, bus.BucketTrust)
		if err != nil {
			t.Fatal(err)
		}
		var b meshv1.TrustBundle
		rev, err := store.Get(ctx, layout.BundleKey, &b)
		if err != nil {
			t.Fatal(err)
		}
		dial := func(cert *tls.Certificate) cav1.CertificateAuthorityServiceClient {
			cfg, err := server.ClientTLSConfig(&b, cert, "ca.test")
			if err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			return cav1.NewCertificateAuthorityServiceClient(cc)
		}
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		boot, err := dial(nil).Bootstrap(ctx, &cav1.BootstrapRequest{Token: dev, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED,
			Role: cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE, Csr: csr})
		if err != nil {
			t.Fatalf("%s: bootstrap: %v", name, err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		cert, err := tls.X509KeyPair(boot.CertificateChainPem, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := dial(&cert).Sign(ctx, &cav1.SignRequest{Csr: csr, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"})
		if err != nil {
			t.Fatalf("%s: sign: %v", name, err)
		}
		leaf, err := pki.ParseCertificatePEM(resp.CertificateChainPem)
		if err != nil {
			t.Fatal(err)
		}
		return &b, rev, leaf
	}
	signing := func(b *meshv1.TrustBundle) string {
		for _, r := range b.Roots {
			if r.Signing {
				return r.Id
			}
		}
		return ""
	}
	verify := func(b *meshv1.TrustBundle, c *x509.Certificate) error {
		pool, err := pki.BundlePool(b)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: pool})
		return err
	}

	b0, _, leaf0 := step("before", "--root-secret", "root-a")
	rootA := signing(b0)
	if len(b0.Roots) != 1 || rootA == "" {
		t.Fatalf("before: %v", b0.Roots)
	}

	b1, rev1, leaf1 := step("step 1", "--root-secret", "root-a", "--trusted-root-secrets", "root-b")
	if len(b1.Roots) != 2 || signing(b1) != rootA || verify(b1, leaf0) != nil || verify(b1, leaf1) != nil {
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
	if err := verify(b2, leaf0); err != nil {
		t.Errorf("step 2: a leaf of the old root is no longer trusted during the overlap: %v", err)
	}
	if err := verify(b2, leaf2); err != nil {
		t.Errorf("step 2: %v", err)
	}
	if err := verify(&meshv1.TrustBundle{Roots: []*meshv1.TrustRoot{rootOf(b2, rootB)}}, leaf2); err != nil {
		t.Errorf("step 2: the new leaf does not chain to the new root: %v", err)
	}

	b3, _, leaf3 := step("step 3", "--root-secret", "root-b")
	if len(b3.Roots) != 1 || signing(b3) != rootB {
		t.Fatalf("step 3: %v", b3.Roots)
	}
	if err := verify(b3, leaf2); err != nil {
		t.Errorf("step 3: %v", err)
	}
	if err := verify(b3, leaf3); err != nil {
		t.Errorf("step 3: %v", err)
	}
	if err := verify(b3, leaf0); err == nil {
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
