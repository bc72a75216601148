package compile

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// heldBackend is a gRPC server with mTLS that holds every call until it
// is released, counting the calls in flight.
type heldBackend struct {
	addr     *net.TCPAddr
	inflight atomic.Int32
	release  chan struct{}
}

func startHeldBackend(t *testing.T, ca *xdstest.CA, uri string) *heldBackend {
	t.Helper()
	cfg, err := ca.ServerTLS(uri)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &heldBackend{addr: lis.Addr().(*net.TCPAddr), release: make(chan struct{}, 16)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		in := &wrapperspb.StringValue{}
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		b.inflight.Add(1)
		defer b.inflight.Add(-1)
		select {
		case <-b.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		return stream.SendMsg(wrapperspb.String("ok"))
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return b
}

// TestGRPCXDSClientCircuitBreaker: gRPC-Go's xDS client, given
// bookbuyer's resources with an UpstreamTrafficSetting of maxRequests 1 on
// bookstore-v1, fails a second concurrent call at once (UNAVAILABLE, max
// requests exceeded) while the first is held by the backend, and calls
// again once it is done: the circuit breaker on real traffic.
func TestGRPCXDSClientCircuitBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gRPC servers and an xDS client")
	}
	ca, err := xdstest.NewCA("osm-test-root")
	if err != nil {
		t.Fatal(err)
	}
	const buyer = "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"
	v1 := startHeldBackend(t, ca, "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1")
	e := bookstore(t, false)
	load(t, e, []synth.Object{
		synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
			&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
			&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Methods: []string{"POST"}}),
		synth.EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij",
			[]synth.Port{{Number: int32(v1.addr.Port), Name: "bookstore-port", AppProtocol: "http"}},
			synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "127.0.0.1"}),
		synth.UpstreamTrafficSetting("bookstore", "bookstore-v1", "bookstore-v1", &meshv1.UpstreamTrafficSetting{
			ConnectionSettings: &meshv1.UpstreamConnectionSettings{Http: &meshv1.UpstreamHTTPConnectionSettings{MaxRequests: proto.Int64(1)}},
		}),
	})
	res, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
	if err != nil {
		t.Fatal(err)
	}
	cb := &nackCounter{acks: map[string]int{}}
	cc := dialXDS(t, ca, serveGRPC(t, "bookbuyer-1", res, cb), "bookbuyer-1", buyer, "xds:///bookstore-v1.bookstore.svc.cluster.local:14001")
	call := func(ctx context.Context) error {
		return cc.Invoke(ctx, "/bookstore.Books/Buy", wrapperspb.String("a book"), &wrapperspb.StringValue{})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	v1.release <- struct{}{}
	if err := call(ctx); err != nil {
		t.Fatalf("first call: %v", err)
	}

	held := make(chan error, 1)
	go func() { held <- call(ctx) }()
	for v1.inflight.Load() != 1 {
		if ctx.Err() != nil {
			t.Fatal("the held call never reached the backend")
		}
		time.Sleep(5 * time.Millisecond)
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	err = call(short)
	cancelShort()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "max requests") {
		t.Fatalf("second concurrent call: %v; want UNAVAILABLE, max requests exceeded", err)
	}
	t.Logf("second concurrent call: %v", err)
	v1.release <- struct{}{}
	if err := <-held; err != nil {
		t.Fatalf("held call: %v", err)
	}
	v1.release <- struct{}{}
	if err := call(ctx); err != nil {
		t.Fatalf("call after the held one finished: %v", err)
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if len(cb.nacks) > 0 {
		t.Errorf("gRPC NACKed: %v", cb.nacks)
	}
}
