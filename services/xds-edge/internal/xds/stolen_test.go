package xds

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestStolenServiceCertificateOpensNoStream (issue 15, item 6; FAULTS F13):
// a workload's service certificate, which carries ClientAuth, chains to the
// mesh root and names the workload, is what every peer of the workload sees
// and what SDS serves it; it opens no xDS stream. Only the xDS client
// certificate of the pod's bootstrap does.
func TestStolenServiceCertificateOpensNoStream(t *testing.T) {
	f := newFixture(t)
	f.seed()
	stolen := f.ca.Dial(t, f.addr, spiffe("a")) // the service certificate's URI SAN
	p, err := xdstest.StartProxy(t.Context(), stolen, xdstest.ProxyOptions{NodeID: "thief", Types: allTypes})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	err = xdstest.Refusal(t, p)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a stream on a service certificate ended with %v, want PermissionDenied", err)
	}
	if got := f.srv.Stats().Refused; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
	// The bootstrap's certificate for the same identity is served.
	ok := f.proxy(spiffe("a"), xdstest.ProxyOptions{NodeID: "a", Types: allTypes})
	if order := initial(t, ok, 4); len(order) != 4 {
		t.Errorf("the xDS client certificate got %v", order)
	}
}
