package caclient

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// rotatingCA is a gRPC server at a fixed address whose serving certificate
// can be switched; restart drops every connection, as a CA restarted with
// a new --root-secret does.
type rotatingCA struct {
	t    *testing.T
	addr string
	cert atomic.Pointer[tls.Certificate]
	mu   sync.Mutex
	srv  *grpc.Server
}

func newRotatingCA(t *testing.T, certFile, keyFile string) *rotatingCA {
	r := &rotatingCA{t: t}
	r.use(certFile, keyFile)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = lis.Addr().String()
	r.serve(lis)
	t.Cleanup(func() {
		r.mu.Lock()
		r.srv.Stop()
		r.mu.Unlock()
	})
	return r
}

func (r *rotatingCA) use(certFile, keyFile string) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cert.Store(&pair)
}

func (r *rotatingCA) serve(lis net.Listener) {
	tc := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cert.Load(), nil }}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	healthpb.RegisterHealthServer(s, health.NewServer())
	r.mu.Lock()
	r.srv = s
	r.mu.Unlock()
	go func() { _ = s.Serve(lis) }()
}

// restart serves certFile from now on, on the same address, dropping every
// connection.
func (r *rotatingCA) restart(certFile, keyFile string) {
	r.use(certFile, keyFile)
	r.mu.Lock()
	r.srv.Stop()
	r.mu.Unlock()
	lis, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(lis)
}

// reaches reports whether a health check over conn succeeds within d.
func reaches(t *testing.T, conn *grpc.ClientConn, d time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// TestRotatedCAIsVerifiedWithoutRedial: after the CA restarts with a
// serving certificate from a new root, an open client connection
// reconnects and verifies it once the new root is among the extra roots
// (the trust bundle, to which a rotation's first step adds it) or in the
// rewritten --ca-trust-file; until then it is refused. Before the trust
// was read at each handshake, the file was read once at Dial and the
// component could never reach the CA again after the switch.
func TestRotatedCAIsVerifiedWithoutRedial(t *testing.T) {
	const name = "osm-cert-authority.osm-system.svc"
	oldPKI, newPKI := newTestPKI(t), newTestPKI(t)
	oldRoot, _ := os.ReadFile(filepath.Join(oldPKI.dir, "root.pem"))
	newRoot, _ := os.ReadFile(filepath.Join(newPKI.dir, "root.pem"))
	for _, via := range []string{"extra roots", "rewritten trust file"} {
		t.Run(via, func(t *testing.T) {
			cert, key := oldPKI.leaf("server", name, "")
			ca := newRotatingCA(t, cert, key)
			trustFile := oldPKI.write("trust-"+strings.ReplaceAll(via, " ", "-")+".pem", oldRoot)
			var extra atomic.Pointer[[]byte]
			c := Config{Addr: ca.addr, ServerName: name, TrustFile: trustFile, ExtraRoots: func() []byte {
				if b := extra.Load(); b != nil {
					return *b
				}
				return nil
			}}
			conn, err := c.DialBootstrap()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := reaches(t, conn, 5*time.Second); err != nil {
				t.Fatalf("before the rotation: %v", err)
			}
			ca.restart(newPKI.leaf("server", name, ""))
			if err := reaches(t, conn, 2*time.Second); err == nil {
				t.Fatal("a CA serving under a root that is neither in the file nor among the extra roots was accepted")
			} else if !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("refused for another reason than the certificate: %v", err)
			}
			switch via {
			case "extra roots":
				both := append(append([]byte{}, oldRoot...), newRoot...)
				extra.Store(&both)
			default:
				oldPKI.write(filepath.Base(trustFile), append(append([]byte{}, oldRoot...), newRoot...))
			}
			if err := reaches(t, conn, 15*time.Second); err != nil {
				t.Fatalf("the new root is trusted (%s) but the CA is not reached: %v", via, err)
			}
		})
	}
}

// TestTrustFileUnreadableFallsBackOnExtraRoots: a trust file that becomes
// empty (mid-update) is not fatal while the extra roots verify the CA; with
// neither, the handshake fails naming --ca-trust-file.
func TestTrustFileUnreadableFallsBackOnExtraRoots(t *testing.T) {
	p := newTestPKI(t)
	root, _ := os.ReadFile(filepath.Join(p.dir, "root.pem"))
	tc := &trustCreds{file: filepath.Join(p.dir, "missing.pem"), extra: func() []byte { return root }}
	if _, err := tc.roots(); err != nil {
		t.Fatalf("extra roots alone: %v", err)
	}
	tc.extra = nil
	if _, err := tc.roots(); err == nil || !strings.Contains(err.Error(), "--ca-trust-file") {
		t.Fatalf("no roots at all: err = %v, want one naming --ca-trust-file", err)
	}
	if _, err := (&Config{Addr: "127.0.0.1:1", TrustFile: p.write("empty.pem", nil)}).DialBootstrap(); err == nil || !strings.Contains(err.Error(), "--ca-trust-file") {
		t.Fatalf("an empty trust file at Dial: err = %v, want one naming --ca-trust-file", err)
	}
}
