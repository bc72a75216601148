package xds

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestProxylessGRPCRetriesThroughAnAlias: real gRPC-Go xDS clients of two
// identities dial the same target, whose API listener names the shared
// route "grpc:route". The group of retrier/retrier aliases that name to its
// retry copy (as the compiler writes a Retry for proxyless clients:
// ProxyGroup.aliases, the copy stored under its own key and named as the
// shared route); other/other has no alias. Against a backend that fails
// each call's first two attempts with UNAVAILABLE, retrier's calls succeed
// on the third attempt and other's fail after one. Then the alias is
// dropped and retrier's calls fail too.
func TestProxylessGRPCRetriesThroughAnAlias(t *testing.T) {
	f := newFixture(t)
	backendID := spiffe("shop")
	cfg, err := f.ca.ServerTLS(backendID)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	attempts := map[string]int{} // call id → attempts seen
	backend := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		in := &wrapperspb.StringValue{}
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		mu.Lock()
		attempts[in.GetValue()]++
		n := attempts[in.GetValue()]
		mu.Unlock()
		if n <= 2 {
			return status.Errorf(codes.Unavailable, "attempt %d of %s fails", n, in.GetValue())
		}
		return stream.SendMsg(wrapperspb.String(in.GetValue()))
	}))
	go backend.Serve(lis)
	defer backend.Stop()
	seen := func(call string) int { mu.Lock(); defer mu.Unlock(); return attempts[call] }

	const target, shared, copyKey = "shop.shop:50051", "grpc:route", "grpc:route|retry|retrier/retrier"
	ws := grpcFlavour(t, target, backendID, uint32(lis.Addr().(*net.TCPAddr).Port))
	retryRoute := xdstest.Route(shared, "grpc:cluster") // named as the shared route
	retryRoute.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{
		RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(3),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
	}
	group := func(ns string, gen uint64, alias bool) xdstest.Write {
		w := xdstest.Group(ns, ns, gen, map[string][]string{lds: {target}, rds: {shared}, cds: {"grpc:cluster"}, eds: {"grpc:cluster"}})
		w.Key = layout.GRPCGroupKey(ns, ns)
		if alias {
			w.Value.(*meshv1.ProxyGroup).Aliases = map[string]*meshv1.ResourceAliases{rds: {Names: map[string]string{shared: copyKey}}}
		}
		return w
	}
	ws = append(ws, res(t, retryRoute, copyKey, 1), group("retrier", 1, true), group("other", 1, false))
	// Envoy groups too: an identity's stream is admitted when it has one.
	ws = append(ws, xdstest.Group("retrier", "retrier", 1, nil), xdstest.Group("other", "other", 1, nil))
	f.commit(ws...)
	f.srv.SetServing(true)

	call := func(cc *grpc.ClientConn, id string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		return cc.Invoke(ctx, "/shop.Shop/Buy", wrapperspb.String(id), &wrapperspb.StringValue{}, grpc.WaitForReady(true))
	}
	retrier, other := dialProxyless(t, f, "retrier", target), dialProxyless(t, f, "other", target)
	if err := call(retrier, "retrier-1"); err != nil {
		t.Fatalf("retrier's call with the Retry: %v (backend saw %d attempts)", err, seen("retrier-1"))
	}
	if n := seen("retrier-1"); n != 3 {
		t.Errorf("retrier's call reached the backend %d times, want 3 (two retried UNAVAILABLE)", n)
	}
	if err := call(other, "other-1"); status.Code(err) != codes.Unavailable {
		t.Fatalf("other's call without a Retry: %v, want UNAVAILABLE", err)
	}
	if n := seen("other-1"); n != 1 {
		t.Errorf("other's call reached the backend %d times, want 1", n)
	}
	if n := f.srv.Stats().Nacks; n != 0 {
		t.Errorf("%d NACKs", n)
	}

	// The Retry goes: the alias is dropped, and retrier is served the
	// shared route without a retry policy.
	acks := f.srv.Stats().Acks
	f.commit(group("retrier", 2, false))
	xdstest.WaitFor(t, "retrier's ACK of the shared route", func() bool { return f.srv.Stats().Acks > acks })
	if err := call(retrier, "retrier-2"); status.Code(err) != codes.Unavailable || seen("retrier-2") != 1 {
		t.Fatalf("retrier's call after the alias went: %v after %d attempts, want UNAVAILABLE after 1", err, seen("retrier-2"))
	}
}
