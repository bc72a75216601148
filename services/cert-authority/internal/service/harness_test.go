package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/logging"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is a real kube-apiserver (tests/kube), started once.
var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, false)) }

func noenv(string) string { return "" }

// serverName is the DNS name of the CA's serving certificate in the tests.
const serverName = "ca.test"

// instance is the service running in this process under app.Run, its gRPC
// and admin listeners on loopback.
type instance struct {
	grpcAddr  string
	adminAddr string
	logs      *logging.Buffer

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

// runService starts the service with NATS at natsURL, the harness's
// kubeconfig, serving certificate name serverName and args, reading its
// environment from env. The test's cleanup stops it if the test has not.
func runService(t *testing.T, natsURL string, env map[string]string, args ...string) *instance {
	t.Helper()
	lis := apptest.Listen(t)
	s := &instance{grpcAddr: lis.Addr().String(), adminAddr: apptest.FreeAddr(t), logs: &logging.Buffer{}, done: make(chan error, 1)}
	args = append([]string{"--nats-url", natsURL, "--admin-addr", s.adminAddr, "--kubeconfig", cluster.KubeconfigPath(),
		"--server-dns-names", serverName}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		s.done <- app.Run(ctx, Spec(Options{Listener: lis}), args, func(k string) string { return env[k] }, s.logs)
	}()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("service stopped with %v", err)
		}
	})
	return s
}

// stop cancels the service and returns what app.Run returned; later calls
// return nil.
func (s *instance) stop() error {
	err := error(nil)
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case err = <-s.done:
		case <-time.After(30 * time.Second):
			err = errors.New("the service did not stop within 30s")
		}
	})
	return err
}

// admin fetches path from the admin listener.
func (s *instance) admin(ctx context.Context, path string) (string, error) {
	return apptest.Get(ctx, s.adminAddr, path)
}

// ready asks the admin listener's /readyz.
func (s *instance) ready() error { return apptest.Ready(s.adminAddr) }

// dial connects to the service with cert as the client certificate (nil
// for Bootstrap), verifying the CA against the roots of b.
func (s *instance) dial(t *testing.T, b *meshv1.TrustBundle, cert *tls.Certificate) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	cc, err := caclient.Dial(s.grpcAddr, b, serverName, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cav1.NewCertificateAuthorityServiceClient(cc)
}

// newCSR returns a fresh P-256 key and a PEM CSR of it without SANs.
func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k := csrtest.Key(t)
	return k, csrtest.PEM(t, k, nil)
}

// bootstrap asks cl for a control-plane certificate of role for key k,
// whose CSR is csr, proving the role with a token of type tt.
func bootstrap(ctx context.Context, cl cav1.CertificateAuthorityServiceClient, token string, tt cav1.TokenType, role cav1.ComponentRole,
	k *ecdsa.PrivateKey, csr []byte) (*tls.Certificate, error) {
	resp, err := cl.Bootstrap(ctx, &cav1.BootstrapRequest{Token: token, TokenType: tt, Role: role, Csr: csr})
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(resp.CertificateChainPem, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return &c, err
}

// devEdge bootstraps an xds-edge certificate with the dev-mode token and
// returns a client presenting it, verifying the CA against b, and the CSR
// the certificate was issued for (a valid Sign CSR of the same key).
func (s *instance) devEdge(ctx context.Context, t *testing.T, b *meshv1.TrustBundle, token string) (cav1.CertificateAuthorityServiceClient, []byte) {
	t.Helper()
	k, csr := newCSR(t)
	cert, err := bootstrap(ctx, s.dial(t, b, nil), token, cav1.TokenType_TOKEN_TYPE_PRE_SHARED, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE, k, csr)
	if err != nil {
		t.Fatalf("bootstrap the xds-edge with the dev token: %v", err)
	}
	return s.dial(t, b, cert), csr
}

// kvBundle reads the trust bundle from KV mesh-trust, with its revision.
func kvBundle(ctx context.Context, conn *bus.Conn) (*meshv1.TrustBundle, uint64, error) {
	store, err := conn.Bucket(ctx, bus.BucketTrust)
	if err != nil {
		return nil, 0, err
	}
	var b meshv1.TrustBundle
	rev, err := store.Get(ctx, layout.BundleKey, &b)
	return &b, rev, err
}

// verifyLeaf checks that c chains to a root of b.
func verifyLeaf(b *meshv1.TrustBundle, c *x509.Certificate) error {
	pool, err := pki.BundlePool(b)
	if err != nil {
		return err
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: pool})
	return err
}
