package edgefault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/tests/stack"
)

// full says whether to run the faults at the fault plan's size
// (OSM_FAULTS_FULL=1) rather than make test's.
func full() bool { return os.Getenv("OSM_FAULTS_FULL") == "1" }

// builder builds the services once for the package's tests.
var builder *stack.Builder

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgefault-bin-")
	if err != nil {
		panic(err)
	}
	builder = stack.NewBuilder(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds services/<name>.
func build(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin, err := builder.Build(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// passwords are the NATS users of the embedded server.
var passwords = map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleCompiler: "compiler-pw", bus.RoleCA: "ca-pw", bus.RoleEdge: "edge-pw"}

// startNATS starts an embedded NATS server with a user per role.
func startNATS(t *testing.T) *bustest.Server {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{Passwords: passwords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// connect connects to srv as role.
func connect(t *testing.T, srv *bustest.Server, role bus.Role) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: role, User: string(role), Password: passwords[role]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// startProc starts a service process and stops it at the end of the test;
// its output is logged when the test fails.
func startProc(t *testing.T, name, bin string, args []string, env map[string]string) *stack.Proc {
	t.Helper()
	p, err := stack.Start(name, bin, args, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(20 * time.Second)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.Output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitReady waits for a process's /readyz.
func waitReady(t *testing.T, p *stack.Proc, admin string, within time.Duration) {
	t.Helper()
	if err := p.WaitReady(t.Context(), admin, within); err != nil {
		t.Fatalf("%s not ready: %v\n%s", p.Name, err, tail(p.Output(), 4000))
	}
}

// dialEdge connects as a proxy with the xDS client certificate for uri
// (signed by pki, which the edge trusts through --tls-client-ca-file). The
// edge is verified by verify when set (its certificate carries a URI SAN,
// no DNS name); without it the edge is not verified.
func dialEdge(t *testing.T, pki *xdstest.CA, addr, uri string, verify func(tls.ConnectionState) error) *grpc.ClientConn {
	t.Helper()
	tc, err := pki.ClientTLS(uri)
	if err != nil {
		t.Fatal(err)
	}
	tc.InsecureSkipVerify = true // replaced by VerifyConnection
	tc.VerifyConnection = verify
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// verifyBy verifies a peer's certificate chain against roots.
func verifyBy(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
}

// writeFile writes data into the test's directory and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
