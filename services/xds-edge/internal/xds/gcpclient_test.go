package xds

import (
	"sort"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestGoControlPlaneADSClient points go-control-plane's own SotW ADS client
// at the edge over mTLS: it receives and ACKs every resource type, SDS for
// its own identity included.
func TestGoControlPlaneADSClient(t *testing.T) {
	f := newFixture(t)
	f.seed()
	if err := f.srv.SetTrustBundle(f.ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.SetCertificate(identity.New("cluster.local", "a", "a"), []byte("a-chain"), []byte("a-key"), "a1"); err != nil {
		t.Fatal(err)
	}
	cc := f.dial(spiffe("a"))
	want := map[string][]string{
		cds: {"ca", "shared"}, eds: {"ca", "shared"}, lds: {"out-a"}, rds: {"rt-a"},
		sds: {layout.SecretRootCert, layout.SecretServiceCert},
	}
	for _, typeURL := range []string{cds, eds, lds, rds, sds} {
		c := sotwclient.NewADSClient(t.Context(), &corev3.Node{Id: "gcp-client"}, typeURL)
		if err := c.InitConnect(cc); err != nil {
			t.Fatalf("%s: connect: %v", typeURL, err)
		}
		resp, err := c.Fetch()
		if err != nil {
			t.Fatalf("%s: fetch: %v", typeURL, err)
		}
		if got := resourceNames(t, resp.Resources); !cmp.Equal(got, want[typeURL]) {
			t.Errorf("%s: got %v, want %v", typeURL, got, want[typeURL])
		}
		if typeURL == sds {
			for _, a := range resp.Resources {
				var s tlsv3.Secret
				if err := a.UnmarshalTo(&s); err != nil {
					t.Fatal(err)
				}
				if s.GetName() == layout.SecretServiceCert && string(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()) != "a-chain" {
					t.Errorf("service-cert is not a's")
				}
			}
		}
		if err := c.Ack(); err != nil {
			t.Fatalf("%s: ack: %v", typeURL, err)
		}
	}
	xdstest.WaitFor(t, "five acks", func() bool { return f.srv.Stats().Acks == 5 })
	if n := f.srv.Stats().Nacks; n != 0 {
		t.Errorf("nacks = %d", n)
	}
}

func resourceNames(t *testing.T, rs []*anypb.Any) []string {
	t.Helper()
	m := map[string]*anypb.Any{}
	for _, a := range rs {
		n, err := xdstest.NameOf(a)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = a
	}
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
