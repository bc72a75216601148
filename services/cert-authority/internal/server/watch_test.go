package server

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// TestEndWatchesLetsGracefulStopReturn: open bundle watches end with
// Unavailable when the server stops, so GracefulStop need not wait for
// its deadline.
func TestEndWatchesLetsGracefulStopReturn(t *testing.T) {
	ca, gs, err := newTestCA(t.Context(), caOptions{devToken: devToken})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-served }()
	ca.addr = lis.Addr().String()
	cl := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	stream, err := cl.WatchTrustBundle(t.Context(), &cav1.WatchTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ca.server.EndWatches()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop still waiting 5s after EndWatches")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("watch ended with %v, want Unavailable", err)
	}
}
