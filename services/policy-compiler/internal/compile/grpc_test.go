package compile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

func newMessage(typeURL string) proto.Message {
	switch typeURL {
	case resourcev3.ClusterType:
		return &clusterv3.Cluster{}
	case resourcev3.EndpointType:
		return &endpointv3.ClusterLoadAssignment{}
	case resourcev3.ListenerType:
		return &listenerv3.Listener{}
	case resourcev3.RouteType:
		return &routev3.RouteConfiguration{}
	}
	panic("unknown type " + typeURL)
}

// TestGRPCGolden pins the gRPC flavour of the bookstore mesh: the client
// side of bookbuyer (three API listeners and one route per reached http
// port: the apex with the 75/25 split, and its backends; in SMI mode each
// route forwards the gRPC calls the route group's matches allow and
// refuses the others with PermissionDenied; clusters with
// certificate-provider TLS; weighted assignments) and the server side of
// bookstore-v1 (a listener per pod IP and target port, mTLS required, RBAC
// by route). Every resource passes ValidateAll.
func TestGRPCGolden(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := bookstore(t, mode == "permissive")
			// Matches as gRPC calls are made: a POST of a method path, one
			// with a header; the GET match matches no gRPC call.
			load(t, e, []synth.Object{synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
				&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
				&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Headers: map[string]string{"x-shop": "main"}},
				&meshv1.HTTPMatch{Name: "browse", PathRegex: "/books", Methods: []string{"GET"}})})
			client, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "bookstore_grpc_"+mode+".golden"), client)
			server, err := e.GRPCServer(id("bookstore", "bookstore-v1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(server) != 1 {
				t.Errorf("bookstore-v1 has %d server listeners, want 1 (one pod IP, one http port)", len(server))
			}
			checkGolden(t, filepath.Join("testdata", "bookstore_grpc_server_"+mode+".golden"), server)
		})
	}
}

// checkGolden validates and renders res, and compares them with the
// golden file path (rewritten with -update).
func checkGolden(t *testing.T, path string, res []*Resource) {
	t.Helper()
	var b bytes.Buffer
	for _, r := range res {
		m := newMessage(r.TypeURL)
		if err := proto.Unmarshal(r.Bytes, m); err != nil {
			t.Fatalf("decode %s: %v", r.Key(), err)
		}
		if err := m.(validated).ValidateAll(); err != nil {
			t.Errorf("%s: %v", r.Key(), err)
		}
		raw, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "=== %s %s version=%s\n%s\n", r.Type, r.Name, r.Version, out.Bytes())
	}
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("gRPC flavour differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), b.String()))
	}
}

// TestGRPCClientScopeAndSANs: in SMI mode bookthief, which no TrafficTarget
// names, is given nothing; bookbuyer's apex cluster checks the SPIFFE ids of
// both bookstore versions, and a destination with no identity (its pods
// gone) matches no certificate.
func TestGRPCClientScopeAndSANs(t *testing.T) {
	e := bookstore(t, false)
	if res, err := e.GRPCClient(id("bookthief", "bookthief")); err != nil || len(res) != 0 {
		t.Errorf("bookthief's gRPC flavour: %d resources, %v; want none", len(res), err)
	}
	res, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
	if err != nil {
		t.Fatal(err)
	}
	var apex *Resource
	for _, r := range res {
		if r.Type == layout.TypeCluster && r.Name == "grpc:bookstore/bookstore|14001" {
			apex = r
		}
	}
	if apex == nil {
		t.Fatal("no gRPC cluster for the bookstore apex")
	}
	c := &clusterv3.Cluster{}
	if err := proto.Unmarshal(apex.Bytes, c); err != nil {
		t.Fatal(err)
	}
	tc := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
	var sans []string
	for _, m := range tc.GetCommonTlsContext().GetValidationContext().GetMatchSubjectAltNames() {
		sans = append(sans, m.GetExact())
	}
	want := []string{"spiffe://cluster.local/ns/bookstore/sa/bookstore-v1", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v2"}
	if fmt.Sprint(sans) != fmt.Sprint(want) {
		t.Errorf("apex SANs %v, want %v", sans, want)
	}
	if got := tc.GetCommonTlsContext().GetTlsCertificateProviderInstance().GetInstanceName(); got != layout.CertProviderInstance {
		t.Errorf("identity certificate provider %q, want %q", got, layout.CertProviderInstance)
	}
	none := grpcSANs(nil, "cluster.local")
	if len(none) != 1 || none[0].GetSafeRegex().GetRegex() != matchNothing {
		t.Errorf("SANs of a destination with no identity: %v", none)
	}
}
