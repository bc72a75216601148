package xds

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// grpcFlavour is a gRPC-flavour configuration (the compiler's, in
// miniature): API listener name → route → cluster with certificate-provider
// TLS checking the SAN want → one endpoint on 127.0.0.1:port.
func grpcFlavour(t *testing.T, name, want string, port uint32) []xdstest.Write {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	provider := &tlsv3.CertificateProviderPluginInstance{InstanceName: layout.CertProviderInstance}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "grpc:route", ConfigSource: ads}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
	cluster := &clusterv3.Cluster{
		Name:                 "grpc:cluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: "grpc:cluster"},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateProviderInstance: provider,
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					CaCertificateProviderInstance: provider,
					MatchSubjectAltNames:          []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: want}}},
				}},
			},
		})}},
	}
	cla := xdstest.Endpoints("grpc:cluster", port)
	cla.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(1)
	cla.Endpoints[0].Locality = &corev3.Locality{}
	return []xdstest.Write{
		res(t, &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, hcm)}}, name, 1),
		res(t, xdstest.Route("grpc:route", "grpc:cluster"), "grpc:route", 1),
		res(t, cluster, "grpc:cluster", 1),
		res(t, cla, "grpc:cluster", 1),
	}
}

var _ = endpointv3.ClusterLoadAssignment{}

// TestProxylessGRPCNodeIsServedItsGRPCGroup: a gRPC client whose node
// metadata says openservicemesh.io/proxyless=grpc is served its identity's
// gRPC group (group.<ns>.<sa>@grpc) instead of the Envoy group, ACKs every
// type (the Envoy group's SDS cluster would be NACKed), and its call
// reaches a gRPC server over mTLS from its file_watcher certificates: the
// server sees the client's workload SPIFFE id. An identity with no gRPC
// group is refused, retryably, naming --proxyless-grpc.
func TestProxylessGRPCNodeIsServedItsGRPCGroup(t *testing.T) {
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
	backend := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
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
	}))
	go backend.Serve(lis)
	defer backend.Stop()

	// The Envoy group has the SDS cluster gRPC rejects; the gRPC group the
	// gRPC flavour.
	ws := grpcFlavour(t, "shop.shop:50051", backendID, uint32(lis.Addr().(*net.TCPAddr).Port))
	envoyCluster := xdstest.Cluster("c-envoy", time.Second)
	envoyCluster.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	envoyCluster.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: layout.SecretServiceCert}}},
	})}}
	// As the compiler writes it: the identity's group, under the gRPC key.
	grpcGroup := xdstest.Group("grpc", "grpc", 1, map[string][]string{lds: {"shop.shop:50051"}, rds: {"grpc:route"}, cds: {"grpc:cluster"}, eds: {"grpc:cluster"}})
	grpcGroup.Key = layout.GRPCGroupKey("grpc", "grpc")
	ws = append(ws,
		res(t, envoyCluster, "c-envoy", 1),
		xdstest.Group("grpc", "grpc", 1, map[string][]string{lds: {"shop.shop:50051"}, rds: {"grpc:route"}, cds: {"c-envoy"}, eds: {"grpc:cluster"}}),
		grpcGroup,
		xdstest.Group("plain", "plain", 1, map[string][]string{lds: {"shop.shop:50051"}, rds: {"grpc:route"}, cds: {"grpc:cluster"}, eds: {"grpc:cluster"}}),
	)
	f.commit(ws...)
	f.srv.SetServing(true)

	dial := func(ns string) *grpc.ClientConn { return dialProxyless(t, f, ns, "shop.shop:50051") }

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out := &wrapperspb.StringValue{}
	if err := dial("grpc").Invoke(ctx, "/shop.Shop/Buy", wrapperspb.String("x"), out); err != nil {
		t.Fatalf("call through the gRPC group: %v", err)
	}
	if out.GetValue() != spiffe("grpc") {
		t.Errorf("the server saw %q, want %s", out.GetValue(), spiffe("grpc"))
	}
	xdstest.WaitFor(t, "ACKs of the four types", func() bool { return f.srv.Stats().Acks >= 4 })
	if n := f.srv.Stats().Nacks; n != 0 {
		t.Errorf("%d NACKs: the stream was served the Envoy group", n)
	}
	for _, s := range f.status.events(meshv1.ProxyEvent_PROXY_EVENT_NACK) {
		t.Errorf("NACK: %v", s.GetLastNack())
	}

	// plain/plain has no gRPC group: refused, retryably. The first call
	// can fail before the resolver has the stream's error (gRPC then says
	// only "produced zero addresses"), so calls are repeated until one
	// carries the edge's refusal; none may ever be served.
	plain := dial("plain")
	deadline := time.Now().Add(15 * time.Second)
	for {
		short, cancelShort := context.WithTimeout(t.Context(), 2*time.Second)
		err = plain.Invoke(short, "/shop.Shop/Buy", wrapperspb.String("x"), out)
		cancelShort()
		if err == nil {
			t.Fatal("a proxyless client of an identity without a gRPC group was served")
		}
		if strings.Contains(err.Error(), "--proxyless-grpc") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client's error does not carry the edge's refusal: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dialProxyless is a proxyless gRPC client of workload ns/ns for
// xds:///target: its bootstrap names the edge over mTLS (its xDS client
// certificate) and a file_watcher certificate provider with its workload
// certificate.
func dialProxyless(t *testing.T, f *fixture, ns, target string) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	xdsFiles, err := f.ca.WriteFiles(dir, "xds", xdstest.ProxyURI(spiffe(ns)))
	if err != nil {
		t.Fatal(err)
	}
	workload, err := f.ca.WriteFiles(dir, "workload", spiffe(ns))
	if err != nil {
		t.Fatal(err)
	}
	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": f.addr,
			"channel_creds": []any{map[string]any{"type": "tls", "config": map[string]string{
				"ca_certificate_file": xdsFiles.Root, "certificate_file": xdsFiles.Cert, "private_key_file": xdsFiles.Key,
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": ns + "-1", "metadata": map[string]any{layout.NodeMetadataProxyless: layout.ProxylessGRPC}},
		"certificate_providers": map[string]any{layout.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file": workload.Cert, "private_key_file": workload.Key, "ca_certificate_file": workload.Root, "refresh_interval": "1s",
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(r), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
