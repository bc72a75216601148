package compile

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// backend is a plain gRPC server with mTLS (client certificate required)
// that answers every method with its name and the caller's URI SAN.
type backend struct {
	name string
	addr *net.TCPAddr
	mu   sync.Mutex
	// callers counts calls by the caller's URI SAN.
	callers map[string]int
}

func startBackend(t *testing.T, ca *xdstest.CA, name, uri string) *backend {
	t.Helper()
	cfg, err := ca.ServerTLS(uri)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: lis.Addr().(*net.TCPAddr), callers: map[string]int{}}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		caller := "none"
		if p, ok := peer.FromContext(stream.Context()); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
				caller = ti.State.PeerCertificates[0].URIs[0].String()
			}
		}
		in := &wrapperspb.StringValue{}
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		b.mu.Lock()
		b.callers[caller]++
		b.mu.Unlock()
		return stream.SendMsg(wrapperspb.String(b.name + " " + caller))
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return b
}

func (b *backend) calls(caller string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.callers[caller]
}

// nackCounter counts the NACKs (requests with an error detail) an xDS
// server receives, by type, with gRPC's error message.
type nackCounter struct {
	serverv3.CallbackFuncs
	mu    sync.Mutex
	acks  map[string]int
	nacks []string
}

func (n *nackCounter) OnStreamRequest(_ int64, r *discoveryv3.DiscoveryRequest) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r.GetErrorDetail() != nil {
		n.nacks = append(n.nacks, r.GetTypeUrl()+": "+r.GetErrorDetail().GetMessage())
	} else if r.GetVersionInfo() != "" {
		n.acks[r.GetTypeUrl()]++
	}
	return nil
}

// serveGRPC serves res to node nodeID over ADS from a go-control-plane
// server on loopback, and returns its address.
func serveGRPC(t *testing.T, nodeID string, res []*Resource, cb *nackCounter) string {
	t.Helper()
	byType := map[string][]types.Resource{}
	for _, r := range res {
		m := newMessage(r.TypeURL)
		if err := proto.Unmarshal(r.Bytes, m); err != nil {
			t.Fatal(err)
		}
		byType[r.TypeURL] = append(byType[r.TypeURL], m)
	}
	snap, err := cachev3.NewSnapshot("1", byType)
	if err != nil {
		t.Fatal(err)
	}
	// No snap.Consistent(): it looks for route names in listeners'
	// filter chains only, not in API listeners.
	// ads false: in ADS mode the cache answers only requests that name
	// every resource of the type in the snapshot, and gRPC names one
	// listener.
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(t.Context(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
	srv := serverv3.NewServer(context.Background(), cache, cb)
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// grpcBootstrap is a gRPC xDS bootstrap: the xDS server at xdsAddr
// (plaintext), the node with the proxyless node metadata, and the
// file_watcher certificate provider layout.CertProviderInstance with a
// certificate of identity from ca; serverTemplate, when set, is the
// server_listener_resource_name_template.
func grpcBootstrap(t *testing.T, ca *xdstest.CA, xdsAddr, nodeID, identity, serverTemplate string) []byte {
	t.Helper()
	files, err := ca.WriteFiles(t.TempDir(), "workload", identity)
	if err != nil {
		t.Fatal(err)
	}
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID, "metadata": map[string]any{layout.NodeMetadataProxyless: layout.ProxylessGRPC}},
		"certificate_providers": map[string]any{layout.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    files.Cert,
				"private_key_file":    files.Key,
				"ca_certificate_file": files.Root,
				"refresh_interval":    "1s",
			},
		}},
	}
	if serverTemplate != "" {
		b["server_listener_resource_name_template"] = serverTemplate
	}
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dialXDS is a gRPC client of target through gRPC's xDS resolver and xDS
// credentials, with grpcBootstrap's bootstrap.
func dialXDS(t *testing.T, ca *xdstest.CA, xdsAddr, nodeID, identity, target string) *grpc.ClientConn {
	t.Helper()
	r, err := xds.NewXDSResolverWithConfigForTesting(grpcBootstrap(t, ca, xdsAddr, nodeID, identity, ""))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, grpc.WithResolvers(r), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGRPCXDSClientCallsThroughTheSplit is the gRPC flavour in front of a
// real data plane: gRPC-Go's xDS client, given bookbuyer's compiled
// client-side resources, ACKs every one of them, resolves
// xds:///bookstore.bookstore.svc.cluster.local:14001 (and the short forms),
// splits the calls 75/25 between bookstore-v1 and bookstore-v2, and reaches
// each over mTLS with the certificates of its file_watcher certificate
// provider: each backend sees bookbuyer's SPIFFE id. A backend whose
// certificate is of another identity than the cluster's SANs name is never
// reached.
func TestGRPCXDSClientCallsThroughTheSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gRPC servers and an xDS client")
	}
	ca, err := xdstest.NewCA("osm-test-root")
	if err != nil {
		t.Fatal(err)
	}
	const buyer = "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"
	v1 := startBackend(t, ca, "v1", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1")
	v2 := startBackend(t, ca, "v2", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v2")
	// An impostor: serves bookwarehouse's endpoints with bookthief's
	// certificate.
	impostor := startBackend(t, ca, "impostor", "spiffe://cluster.local/ns/bookthief/sa/bookthief")

	// The bookstore mesh, with the endpoints moved to the loopback servers
	// and a route group whose matches allow Buy as gRPC calls it (a POST):
	// the client forwards only the calls a TrafficTarget allows.
	e := bookstore(t, false)
	load(t, e, []synth.Object{synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
		&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}},
		&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/bookstore.Books/Bought", Methods: []string{"POST"}}),
		synth.HTTPRouteGroup("bookwarehouse", "bookwarehouse-service-routes",
			&meshv1.HTTPMatch{Name: "restock-books", PathRegex: "/bookstore.Books/Buy", Methods: []string{"POST"}})})
	port := func(b *backend) synth.Port {
		return synth.Port{Number: int32(b.addr.Port), Name: "bookstore-port", AppProtocol: "http"}
	}
	load(t, e, []synth.Object{
		synth.EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij", []synth.Port{port(v1)}, synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "127.0.0.1"}),
		synth.EndpointSlice("bookstore", "bookstore-v2", "bookstore-v2-klmno", []synth.Port{port(v2)}, synth.Endpoint{Pod: "bookstore-v2-8d9e7f6c5-pqrst", IP: "127.0.0.1"}),
		synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{{Number: int32(impostor.addr.Port), Name: "bookwarehouse-port", AppProtocol: "http"}},
			synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "127.0.0.1"}),
	})
	// bookstore-v1 reaches bookwarehouse; its flavour is served too, to
	// check the impostor.
	res, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := e.GRPCClient(id("bookstore", "bookstore-v1"))
	if err != nil {
		t.Fatal(err)
	}
	cb := &nackCounter{acks: map[string]int{}}
	xdsAddr := serveGRPC(t, "bookbuyer-1", res, cb)
	storeAddr := serveGRPC(t, "bookstore-v1-1", store, cb)

	dial := func(t *testing.T, xdsAddr, nodeID, identity, target string) *grpc.ClientConn {
		return dialXDS(t, ca, xdsAddr, nodeID, identity, target)
	}
	call := func(ctx context.Context, cc *grpc.ClientConn) (string, error) {
		out := &wrapperspb.StringValue{}
		err := cc.Invoke(ctx, "/bookstore.Books/Buy", wrapperspb.String("a book"), out)
		return out.GetValue(), err
	}

	for _, target := range []string{"bookstore.bookstore.svc.cluster.local:14001", "bookstore.bookstore.svc:14001", "bookstore.bookstore:14001"} {
		t.Run(target, func(t *testing.T) {
			cc := dial(t, xdsAddr, "bookbuyer-1", buyer, "xds:///"+target)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			if _, err := call(ctx, cc); err != nil {
				t.Fatalf("first call: %v", err)
			}
		})
	}

	cc := dial(t, xdsAddr, "bookbuyer-1", buyer, "xds:///bookstore.bookstore.svc.cluster.local:14001")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b1, b2 := v1.calls(buyer), v2.calls(buyer)
	const n = 2000
	for i := range n {
		got, err := call(ctx, cc)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if !strings.HasSuffix(got, " "+buyer) {
			t.Fatalf("call %d: backend answered %q: it saw no SPIFFE id of bookbuyer", i, got)
		}
	}
	c1, c2 := v1.calls(buyer)-b1, v2.calls(buyer)-b2
	share := 100 * float64(c1) / float64(n)
	t.Logf("%d calls: bookstore-v1 %d (%.1f%%), bookstore-v2 %d", n, c1, share, c2)
	if c1+c2 != n || share < 71 || share > 79 {
		t.Errorf("split 75/25: v1 %d, v2 %d of %d calls", c1, c2, n)
	}

	// bookstore-v1 calls bookwarehouse, whose endpoint presents bookthief's
	// certificate: the cluster's SAN check refuses the handshake.
	wh := dial(t, storeAddr, "bookstore-v1-1", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1", "xds:///bookwarehouse.bookwarehouse:14001")
	ctx2, cancel2 := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel2()
	if got, err := call(ctx2, wh); err == nil {
		t.Errorf("call to an endpoint of the wrong identity succeeded: %q", got)
	} else if status.Code(err) == codes.PermissionDenied {
		t.Errorf("call to the impostor: %v; want it refused by the handshake, not by the route", err)
	} else {
		t.Logf("call to the impostor: %v", err)
	}
	if n := impostor.calls("spiffe://cluster.local/ns/bookstore/sa/bookstore-v1"); n != 0 {
		t.Errorf("the impostor served %d calls", n)
	}

	cb.mu.Lock()
	defer cb.mu.Unlock()
	if len(cb.nacks) > 0 {
		t.Errorf("gRPC NACKed: %s", fmt.Sprint(cb.nacks))
	}
	for _, typ := range []string{TypeURL(layout.TypeListener), TypeURL(layout.TypeRoute), TypeURL(layout.TypeCluster), TypeURL(layout.TypeEndpoint)} {
		if cb.acks[typ] == 0 {
			t.Errorf("no ACK of %s", typ)
		}
	}
}

// TestGRPCXDSClientResolvesTheBareTarget: in permissive mode bookstore-v1,
// in the bookstore namespace, dials the bare target xds:///bookstore:14001
// as it would dial bookstore:14001 through Kubernetes DNS: gRPC-Go's xDS
// client gets the API listener of that name and reaches a bookstore
// backend. bookbuyer, in another namespace, is not given that name.
func TestGRPCXDSClientResolvesTheBareTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gRPC servers and an xDS client")
	}
	ca, err := xdstest.NewCA("osm-test-root")
	if err != nil {
		t.Fatal(err)
	}
	const storeID = "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1"
	v1 := startBackend(t, ca, "v1", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1")
	v2 := startBackend(t, ca, "v2", "spiffe://cluster.local/ns/bookstore/sa/bookstore-v2")
	e := bookstore(t, true)
	port := func(b *backend) synth.Port {
		return synth.Port{Number: int32(b.addr.Port), Name: "bookstore-port", AppProtocol: "http"}
	}
	load(t, e, []synth.Object{
		synth.EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij", []synth.Port{port(v1)}, synth.Endpoint{Pod: "bookstore-v1-6b7f8c9d4-klmno", IP: "127.0.0.1"}),
		synth.EndpointSlice("bookstore", "bookstore-v2", "bookstore-v2-klmno", []synth.Port{port(v2)}, synth.Endpoint{Pod: "bookstore-v2-8d9e7f6c5-pqrst", IP: "127.0.0.1"}),
	})
	res, err := e.GRPCClient(id("bookstore", "bookstore-v1"))
	if err != nil {
		t.Fatal(err)
	}
	buyer, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range buyer {
		if r.Type == layout.TypeListener && r.Name == "bookstore:14001" {
			t.Error("bookbuyer, in another namespace, is given the bare name bookstore:14001")
		}
	}
	cb := &nackCounter{acks: map[string]int{}}
	xdsAddr := serveGRPC(t, "bookstore-v1-1", res, cb)
	cc := dialXDS(t, ca, xdsAddr, "bookstore-v1-1", storeID, "xds:///bookstore:14001")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out := &wrapperspb.StringValue{}
	if err := cc.Invoke(ctx, "/bookstore.Books/Buy", wrapperspb.String("a book"), out); err != nil {
		t.Fatalf("call to xds:///bookstore:14001: %v", err)
	}
	if v1.calls(storeID)+v2.calls(storeID) != 1 {
		t.Errorf("the call reached no bookstore backend: %q", out.GetValue())
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if len(cb.nacks) > 0 {
		t.Errorf("gRPC NACKed: %v", cb.nacks)
	}
}
