package xds

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestGRPCXDSClientNacksSDSClusters points gRPC-Go's xDS client at the edge
// over mTLS. gRPC rejects clusters whose TLS names SDS secrets (gRFC A29
// wants certificate-provider instances), so the edge's Envoy-style cluster
// is NACKed: the edge must record it as a NACK with gRPC's error detail,
// publish it, and not send the same version again.
func TestGRPCXDSClientNacksSDSClusters(t *testing.T) {
	f := newFixture(t)
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "rt-grpc", ConfigSource: ads}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
	lis := &listenerv3.Listener{Name: "svc.shop", ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, hcm)}}
	cluster := xdstest.Cluster("c-grpc", time.Second)
	cluster.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	cluster.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: layout.SecretServiceCert, SdsConfig: ads}},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: layout.SecretRootCert, SdsConfig: ads}},
		},
	})}}
	f.commit(
		res(t, lis, "svc.shop", 1),
		res(t, xdstest.Route("rt-grpc", "c-grpc"), "rt-grpc", 1),
		res(t, cluster, "c-grpc", 1),
		res(t, xdstest.Endpoints("c-grpc", 50051), "c-grpc", 1),
		xdstest.Group("grpc", "grpc", 1, map[string][]string{lds: {"svc.shop"}, rds: {"rt-grpc"}, cds: {"c-grpc"}, eds: {"c-grpc"}}),
	)
	f.srv.SetServing(true)

	// The gRPC client's bootstrap: the edge over mTLS, with a client
	// certificate for identity grpc/grpc.
	files, err := f.ca.WriteFiles(t.TempDir(), "grpc", xdstest.ProxyURI(spiffe("grpc")))
	if err != nil {
		t.Fatal(err)
	}
	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": f.addr,
			"channel_creds": []any{map[string]any{"type": "tls", "config": map[string]string{
				"ca_certificate_file": files.Root,
				"certificate_file":    files.Cert,
				"private_key_file":    files.Key,
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]string{"id": "grpc-client-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///svc.shop", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()

	var nack *meshv1.ProxyStatus
	xdstest.WaitFor(t, "gRPC's NACK of the cluster", func() bool {
		for _, s := range f.status.events(meshv1.ProxyEvent_PROXY_EVENT_NACK) {
			if s.GetLastNack().GetTypeUrl() == cds {
				nack = s
				return true
			}
		}
		return false
	})
	if !strings.Contains(nack.GetLastNack().GetErrorMessage(), "tls_certificate_sds_secret_configs") {
		t.Errorf("nack error detail %q does not carry gRPC's reason", nack.GetLastNack().GetErrorMessage())
	}
	if nack.GetNodeId() != "grpc-client-1" || nack.GetIdentity().GetNamespace() != "grpc" || nack.GetLastNack().GetVersion() == "" {
		t.Errorf("nack status %v", nack)
	}
	// A route edit reaches gRPC, which ACKs it. Had the edge sent the
	// rejected cluster again, it would have come first (CDS before RDS) and
	// gRPC would have NACKed it a second time.
	acks := f.srv.Stats().Acks
	f.commit(res(t, xdstest.Route("rt-grpc", "c-grpc-v2"), "rt-grpc", 2))
	xdstest.WaitFor(t, "gRPC's ACK of the route edit", func() bool { return f.srv.Stats().Acks > acks })
	if n := f.srv.Stats().Nacks; n != 1 {
		t.Errorf("nacks = %d, want 1: the rejected version was sent again", n)
	}
}
