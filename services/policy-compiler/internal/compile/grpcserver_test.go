package compile

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// TestGRPCXDSServerAuthorizesByRoute is the server side of the gRPC
// flavour in front of gRPC-Go's xDS-enabled server: bookstore-v1, on
// loopback, is served its compiled server listener, and accepts bookbuyer's
// call to the one method its HTTPRouteGroup match allows
// (/bookstore.Books/Buy), seeing bookbuyer's SPIFFE id; another method, and
// the same method from bookthief's certificate, are PermissionDenied; a
// client without a certificate fails the handshake. bookbuyer's client
// refuses Steal itself (its route has no match of it), so Steal never
// reaches the server; bookthief's Buy, which a match allows to bookbuyer,
// does, and the server's RBAC refuses it.
func TestGRPCXDSServerAuthorizesByRoute(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gRPC servers and xDS clients")
	}
	ca, err := xdstest.NewCA("osm-test-root")
	if err != nil {
		t.Fatal(err)
	}
	const (
		buyer = "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"
		thief = "spiffe://cluster.local/ns/bookthief/sa/bookthief"
		store = "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1"
	)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(lis.Addr().(*net.TCPAddr).Port)

	// bookstore-v1's pod moves to 127.0.0.1:port; its route group allows
	// one gRPC method.
	e := bookstore(t, false)
	p := synth.Port{Number: port, Name: "bookstore-port", AppProtocol: "http"}
	load(t, e, []synth.Object{
		synth.Pod("bookstore", "bookstore-v1-6b7f8c9d4-klmno", "bookstore-v1", "127.0.0.1", map[string]string{"app": "bookstore", "version": "v1"}),
		synth.EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij", []synth.Port{p}, synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "127.0.0.1"}),
		synth.EndpointSlice("bookstore", "bookstore", "bookstore-abcde", []synth.Port{p}, synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "127.0.0.1"}),
		synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
			&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
			&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Methods: []string{"POST"}}),
	})
	srvRes, err := e.GRPCServer(id("bookstore", "bookstore-v1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(srvRes) != 1 || srvRes[0].Name != GRPCServerListenerName("127.0.0.1", port) {
		t.Fatalf("server listeners %v, want one for 127.0.0.1:%d", srvRes, port)
	}
	cliRes, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
	if err != nil {
		t.Fatal(err)
	}
	cb := &nackCounter{acks: map[string]int{}}
	srvXDS := serveGRPC(t, "bookstore-v1-1", srvRes, cb)
	cliXDS := serveGRPC(t, "bookbuyer-1", cliRes, cb)

	serving := make(chan struct{})
	servingOnce := false
	seen := &methodCounter{n: map[string]int{}}
	srv, err := xds.NewGRPCServer(
		grpc.Creds(mustServerCreds(t)),
		grpc.StatsHandler(seen),
		xds.BootstrapContentsForTesting(grpcBootstrap(t, ca, srvXDS, "bookstore-v1-1", store, GRPCServerListenerPrefix+"%s")),
		xds.ServingModeCallback(func(_ net.Addr, a xds.ServingModeChangeArgs) {
			if a.Mode == connectivity.ServingModeServing && !servingOnce {
				servingOnce = true
				close(serving)
			}
			if a.Err != nil {
				t.Logf("serving mode %v: %v", a.Mode, a.Err)
			}
		}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			caller := "none"
			if p, ok := peer.FromContext(stream.Context()); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
					caller = ti.State.PeerCertificates[0].URIs[0].String()
				}
			}
			if err := stream.RecvMsg(&wrapperspb.StringValue{}); err != nil {
				return err
			}
			return stream.SendMsg(wrapperspb.String(caller))
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	select {
	case <-serving:
	case <-time.After(20 * time.Second):
		t.Fatal("the xDS-enabled server never started serving")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	call := func(cc *grpc.ClientConn, method string) (string, error) {
		out := &wrapperspb.StringValue{}
		err := cc.Invoke(ctx, method, wrapperspb.String("a book"), out)
		return out.GetValue(), err
	}
	const target = "xds:///bookstore-v1.bookstore:14001"
	bb := dialXDS(t, ca, cliXDS, "bookbuyer-1", buyer, target)
	if got, err := call(bb, "/bookstore.Books/Buy"); err != nil || got != buyer {
		t.Errorf("bookbuyer's Buy: %q, %v; want the server to see %s", got, err, buyer)
	}
	if _, err := call(bb, "/bookstore.Books/Steal"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bookbuyer's Steal: %v, want PermissionDenied", err)
	}
	// bookthief, with bookbuyer's client config but its own certificate.
	bt := dialXDS(t, ca, cliXDS, "bookbuyer-1", thief, target)
	if _, err := call(bt, "/bookstore.Books/Buy"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bookthief's Buy: %v, want PermissionDenied", err)
	}
	if n := seen.count("/bookstore.Books/Steal"); n != 0 {
		t.Errorf("bookbuyer's Steal reached the server %d times; its client's route should refuse it", n)
	}
	if n := seen.count("/bookstore.Books/Buy"); n != 2 {
		t.Errorf("Buy reached the server %d times, want 2 (bookbuyer's, and bookthief's that RBAC refuses)", n)
	}
	// A client without a mesh certificate.
	tlsNoCert, err := ca.ClientTLS("")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsNoCert)))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancelShort()
	if err := plain.Invoke(short, "/bookstore.Books/Buy", wrapperspb.String("a book"), &wrapperspb.StringValue{}); err == nil || status.Code(err) == codes.PermissionDenied {
		t.Errorf("a client without a certificate: %v, want a failed handshake", err)
	} else {
		t.Logf("a client without a certificate: %v", err)
	}

	cb.mu.Lock()
	defer cb.mu.Unlock()
	if len(cb.nacks) > 0 {
		t.Errorf("gRPC NACKed: %v", cb.nacks)
	}
	if cb.acks[TypeURL(layout.TypeListener)] < 2 {
		t.Errorf("%d ACKs of listeners, want the server's and the client's", cb.acks[TypeURL(layout.TypeListener)])
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("calls ran out of time")
	}
}

// methodCounter is a server stats handler that counts the calls that reach
// the server, by method, before any interceptor or filter runs.
type methodCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *methodCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	m.mu.Lock()
	m.n[info.FullMethodName]++
	m.mu.Unlock()
	return ctx
}

func (m *methodCounter) HandleRPC(context.Context, stats.RPCStats) {}

func (m *methodCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (m *methodCounter) HandleConn(context.Context, stats.ConnStats) {}

func (m *methodCounter) count(method string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[method]
}

func mustServerCreds(t *testing.T) credentials.TransportCredentials {
	t.Helper()
	c, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
