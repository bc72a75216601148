package server

import (
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
	ca, gs := serveCA(t, caOptions{devToken: devToken})
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
