package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// mainPackage is the xds-edge binary's package.
const mainPackage = "github.com/openservicemesh/osm/services/xds-edge"

// mainDeps lists the packages the xds-edge binary links, as the module
// alone builds it.
func mainDeps(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: this test runs go list, which needs the go command and the module cache; make test runs it")
	}
	cmd := exec.Command("go", "list", "-deps", mainPackage)
	cmd.Env = append(cmd.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed only %d packages; the check would prove nothing", len(deps))
	}
	return deps
}

// TestNoKubernetesClient asserts the design card's promise: the edge binary
// links no Kubernetes package at all, so it cannot call the API.
func TestNoKubernetesClient(t *testing.T) {
	for _, d := range mainDeps(t) {
		if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") {
			t.Errorf("the xds-edge binary depends on %s", d)
		}
	}
}

func TestHelpExplainsTheFlags(t *testing.T) {
	apptest.HelpContains(t, Spec, "--listen-addr", "env OSM_LISTEN_ADDR", "--nats-lost-threshold", "--tls-client-ca-file", "--ca-addr", "--stream-rate",
		"--max-connection-age", "--pod-name", "--ca-bootstrap-token-file", "--ack-status-interval", "no Kubernetes API call")
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		"--tls-cert-file", dir, "--tls-key-file", dir, "--tls-client-ca-file", dir,
		"--ca-client-cert-file", dir, "--ca-client-key-file", dir, "--ca-trust-file", dir,
	}
	apptest.RefusesConfig(t, Spec,
		apptest.BadConfig{Args: nil, Flag: "--ca-trust-file"},
		apptest.BadConfig{Args: []string{"--ca-trust-file", dir, "--tls-cert-file", dir}, Flag: "--tls-key-file"},
		apptest.BadConfig{Args: []string{"--ca-trust-file", dir, "--ca-client-key-file", dir}, Flag: "--ca-client-cert-file"},
		// Without both overrides the edge bootstraps its own certificate.
		apptest.BadConfig{Args: []string{"--ca-trust-file", dir, "--ca-bootstrap-token-file", "/does/not/exist"}, Flag: "--ca-bootstrap-token-file"},
		apptest.BadConfig{Args: []string{"--ca-trust-file", dir, "--ca-bootstrap-token-file", dir, "--ca-bootstrap-token-type", "password"}, Flag: "--ca-bootstrap-token-type"},
		apptest.BadConfig{Args: []string{"--ca-trust-file", dir, "--ca-bootstrap-token-file", dir, "--control-plane-cert-ttl", "1s"}, Flag: "--control-plane-cert-ttl"},
		apptest.BadConfig{Args: append(append([]string{}, files...), "--nats-lost-threshold", "10ms"), Flag: "--nats-lost-threshold"},
		apptest.BadConfig{Args: append(append([]string{}, files...), "--stream-rate", "0"), Flag: "--stream-rate"},
		apptest.BadConfig{Args: append(append([]string{}, files...), "--listen-addr", "nonsense"), Flag: "--listen-addr"},
		apptest.BadConfig{Args: append(append([]string{}, files...), "--max-connection-age", "1s"), Flag: "--max-connection-age"},
		apptest.BadConfig{Args: []string{"--tls-cert-file", "/does/not/exist", "--tls-key-file", dir, "--tls-client-ca-file", dir, "--ca-client-cert-file", dir, "--ca-client-key-file", dir, "--ca-trust-file", dir}, Flag: "--tls-cert-file"},
	)
}

// TestServiceEndToEnd runs the binary's spec through the runner with real
// flags: NATS (embedded, with role passwords), mTLS files, and a unit-test
// fake of the CA's Sign RPC. /readyz stays 503 until the compiled state is
// synced; then a delta proxy receives its clusters and an SDS certificate
// for its own identity, signed through the CA.
func TestServiceEndToEnd(t *testing.T) {
	t.Run("certificate files", func(t *testing.T) { serviceEndToEnd(t, false) })
	t.Run("bootstrapped certificate", func(t *testing.T) { serviceEndToEnd(t, true) })
}

// serviceEndToEnd runs the service with its own certificate from files, or
// (bootstrap) obtained from the CA's Bootstrap with the dev token, in which
// case the CA accepts Sign only from that certificate.
func serviceEndToEnd(t *testing.T, bootstrap bool) {
	dir := t.TempDir()
	root, err := xdstest.NewCA("mesh-root")
	if err != nil {
		t.Fatal(err)
	}
	const edgeURI = "spiffe://cluster.local/osm/xds-edge"
	files, err := root.WriteFiles(dir, "edge", edgeURI)
	if err != nil {
		t.Fatal(err)
	}
	rootFile, certFile, keyFile := files.Root, files.Cert, files.Key
	fake := &xdstest.FakeCA{Root: root}
	caTLS, err := root.ServerTLS("spiffe://cluster.local/osm/cert-authority")
	if err != nil {
		t.Fatal(err)
	}
	ownCert := []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--ca-client-cert-file", certFile, "--ca-client-key-file", keyFile}
	if bootstrap {
		fake.BootstrapToken, fake.SignCaller = "dev-token", edgeURI
		caTLS.ClientAuth = tls.VerifyClientCertIfGiven // Bootstrap callers have no certificate yet
		token := filepath.Join(dir, "token")
		if err := os.WriteFile(token, []byte("dev-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ownCert = []string{"--ca-bootstrap-token-file", token, "--ca-bootstrap-token-type", "pre-shared"}
	}
	caSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(caTLS)))
	cav1.RegisterCertificateAuthorityServiceServer(caSrv, fake)
	caLn := apptest.Listen(t)
	go func() { _ = caSrv.Serve(caLn) }()
	t.Cleanup(caSrv.Stop)

	pw := map[bus.Role]string{bus.RoleEdge: "edge-pw", bus.RoleCompiler: "compiler-pw", bus.RoleCA: "ca-pw"}
	nats, err := bustest.Start(bustest.Options{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)

	adminAddr, xdsAddr := apptest.FreeAddr(t), apptest.FreeAddr(t)
	args := []string{
		"--nats-url", nats.URL(), "--nats-user", "edge", "--nats-password", "edge-pw",
		"--admin-addr", adminAddr, "--listen-addr", xdsAddr, "--log-format", "text",
		"--tls-client-ca-file", rootFile,
		"--ca-addr", caLn.Addr().String(), "--ca-server-name", "localhost", "--ca-trust-file", rootFile,
		"--pod-name", "edge-e2e", "--cert-ttl", "1h",
	}
	args = append(args, ownCert...)
	ctx, cancel := context.WithCancel(t.Context())
	runErr, logs := apptest.Start(ctx, Spec(Options{}), args, nil)

	apptest.Eventually(t, "/readyz to answer 503 before the sync", 10*time.Second, func() error {
		err := apptest.Ready(adminAddr)
		if err == nil {
			return errors.New("ready before the sync")
		}
		if !strings.Contains(err.Error(), "503") {
			return err
		}
		return nil
	})

	// The compiler and the CA write their buckets.
	connect := func(role bus.Role) *bus.Conn {
		c, err := bus.Connect(t.Context(), bus.Options{URL: nats.URL(), Role: role, User: string(role), Password: pw[role]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	trust, err := connect(bus.RoleCA).EnsureBucket(t.Context(), bus.BucketTrust, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Put(t.Context(), layout.BundleKey, root.Bundle()); err != nil {
		t.Fatal(err)
	}
	compiled, err := connect(bus.RoleCompiler).EnsureBucket(t.Context(), bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cw, err := xdstest.Resource(xdstest.Cluster("web", time.Second), "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []xdstest.Write{cw, xdstest.Group("shop", "web", 1, map[string][]string{resourcev3.ClusterType: {"web"}}), xdstest.Generation(1)} {
		if _, err := compiled.Put(t.Context(), w.Key, w.Value); err != nil {
			t.Fatal(err)
		}
	}
	apptest.Eventually(t, "/readyz to answer 200 after the sync", 10*time.Second, func() error { return apptest.Ready(adminAddr) })

	id := identity.New("cluster.local", "shop", "web")
	tc, err := root.ClientTLS(id.URLFor(identity.UsageXDSClient).String())
	if err != nil {
		t.Fatal(err)
	}
	var served *x509.Certificate
	tc.InsecureSkipVerify = true // replaced by VerifyConnection: proxies check the edge's URI SAN
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: root.Pool()}); err != nil {
			return err
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != edgeURI {
			return fmt.Errorf("edge identity %v, want %s", leaf.URIs, edgeURI)
		}
		served = leaf
		return nil
	}
	cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	p, err := xdstest.StartProxy(t.Context(), cc, xdstest.ProxyOptions{NodeID: "uuid-1", Delta: true, Types: []string{resourcev3.ClusterType, resourcev3.SecretType}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	apptest.Eventually(t, "the proxy's cluster and secrets", 10*time.Second, func() error {
		if len(p.Held(resourcev3.ClusterType)) != 1 || len(p.Held(resourcev3.SecretType)) != 2 {
			return fmt.Errorf("the proxy holds clusters %v and secrets %v (stream error %v)", p.Held(resourcev3.ClusterType), p.Held(resourcev3.SecretType), p.Err())
		}
		return nil
	})
	var sec tlsv3.Secret
	if err := p.Held(resourcev3.SecretType)["service-cert"].UnmarshalTo(&sec); err != nil {
		t.Fatal(err)
	}
	tlsCert := sec.GetTlsCertificate()
	pair, err := tls.X509KeyPair(tlsCert.GetCertificateChain().GetInlineBytes(), tlsCert.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("service-cert: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("service-cert is for %v, want %s", leaf.URIs, id)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: root.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("service-cert does not chain to the mesh root: %v", err)
	}
	if fake.Calls() != 1 {
		t.Errorf("the CA signed %d times, want 1", fake.Calls())
	}
	if bootstrap {
		if fake.Bootstraps() != 1 {
			t.Errorf("the edge bootstrapped %d times, want 1", fake.Bootstraps())
		}
		if served == nil || served.NotAfter.Sub(served.NotBefore) > 2*time.Hour {
			t.Errorf("the ADS listener served %v, want the bootstrapped certificate", served)
		}
	}

	body, err := apptest.Metrics(adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"osm_xds_connected_proxies", "osm_xds_pushes", "osm_xds_service_cert_lifetime_remaining_min_ratio", "osm_xds_service_certs_low_lifetime"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	p.Stop()
	cancel()
	apptest.Stopped(t, runErr, logs)
}
