package compile

import (
	"regexp"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// acceptedSANs reports which of the candidate URI SANs the cluster's
// upstream TLS accepts, as Envoy evaluates match_typed_subject_alt_names:
// an empty list accepts every certificate of the mesh, else any matcher
// that matches accepts.
func acceptedSANs(t *testing.T, c *clusterv3.Cluster, candidates []string) []string {
	t.Helper()
	tlsCtx := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
	matchers := tlsCtx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	var out []string
	for _, san := range candidates {
		ok := len(matchers) == 0
		for _, m := range matchers {
			if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
				continue
			}
			sm := m.GetMatcher()
			switch {
			case sm.GetExact() != "":
				ok = ok || sm.GetExact() == san
			case sm.GetSafeRegex() != nil:
				ok = ok || regexp.MustCompile(`^(?:`+sm.GetSafeRegex().GetRegex()+`)$`).MatchString(san)
			default:
				t.Fatalf("SAN matcher %v is neither exact nor a regex", sm)
			}
		}
		if ok {
			out = append(out, san)
		}
	}
	return out
}

// TestDestinationWithoutIdentityAcceptsNoCertificate (issue 15, item 9):
// a Service scaled to zero pods has no known identity, so its cluster
// accepts no certificate at all, where an empty SAN list would accept any
// certificate of the mesh; a Service without a selector has none unless it
// declares its identities. A pod that
// appears gives the cluster its identity again.
func TestDestinationWithoutIdentityAcceptsNoCertificate(t *testing.T) {
	http := synth.Port{Number: 14001, Name: "http", AppProtocol: "http"}
	e := newEngine()
	load(t, e, append(synth.Bookstore(true),
		synth.Service("bookstore", "idle", "10.96.0.50", map[string]string{"app": "idle"}, http),
		synth.Service("bookstore", "selectorless", "10.96.0.51", nil, http)))
	candidates := []string{
		"spiffe://cluster.local/ns/bookstore/sa/bookstore-v1",
		"spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer",
		"spiffe://cluster.local/ns/bookstore/sa/idle",
		"spiffe://cluster.local/osm/xds-edge",
		"", "x",
	}
	c := decode(t, e, layout.TypeCluster, "bookstore/idle|14001", &clusterv3.Cluster{})
	if got := acceptedSANs(t, c, candidates); len(got) != 0 {
		t.Errorf("cluster bookstore/idle|14001 accepts %q; want no certificate at all", got)
	}
	// A selectorless Service without openservicemesh.io/service-accounts is
	// refused (selectorless.go): no cluster at all. With it, its cluster
	// accepts the declared identity alone.
	if e.Resource(layout.TypeCluster, "bookstore/selectorless|14001") != nil {
		t.Error("a selectorless Service without declared identities has a cluster")
	}
	load(t, e, []synth.Object{synth.SelectorlessService("bookstore", "selectorless", "10.96.0.51", "bookstore/bookstore-v1", http)})
	c = decode(t, e, layout.TypeCluster, "bookstore/selectorless|14001", &clusterv3.Cluster{})
	if got := acceptedSANs(t, c, candidates); len(got) != 1 || got[0] != candidates[0] {
		t.Errorf("the declared selectorless Service accepts %q; want %s alone", got, candidates[0])
	}

	// The idle Service's first pod brings its identity.
	load(t, e, []synth.Object{
		synth.ServiceAccount("bookstore", "idle"),
		synth.Pod("bookstore", "idle-0", "idle", "10.244.2.50", map[string]string{"app": "idle"}),
	})
	c = decode(t, e, layout.TypeCluster, "bookstore/idle|14001", &clusterv3.Cluster{})
	if got := acceptedSANs(t, c, candidates); len(got) != 1 || got[0] != "spiffe://cluster.local/ns/bookstore/sa/idle" {
		t.Errorf("with a pod, bookstore/idle accepts %q; want its identity alone", got)
	}
}
