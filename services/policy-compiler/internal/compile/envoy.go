package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	directresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Resource is one compiled Envoy resource, serialised once.
type Resource struct {
	// Type is the short type of the resource in compiled keys (layout.TypeCluster, ...).
	Type string
	// TypeURL is the xDS type URL.
	TypeURL string
	// Name is the xDS resource name.
	Name string
	// Version is the content hash of Bytes.
	Version string
	// Bytes is the deterministic protobuf encoding of the resource.
	Bytes []byte

	key string // layout.ResourceKey(Type, Name), computed once
}

// Key is the resource's key in KV mesh-compiled.
func (r *Resource) Key() string {
	if r.key == "" {
		r.key = layout.ResourceKey(r.Type, r.Name)
	}
	return r.key
}

type validated interface {
	proto.Message
	ValidateAll() error
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// TypeURLs of the short resource types.
var typeURLs = map[string]string{
	layout.TypeCluster:  resourcev3.ClusterType,
	layout.TypeEndpoint: resourcev3.EndpointType,
	layout.TypeListener: resourcev3.ListenerType,
	layout.TypeRoute:    resourcev3.RouteType,
}

// TypeURL is the xDS type URL of a short resource type.
func TypeURL(typ string) string { return typeURLs[typ] }

// newResource validates m and serialises it once.
func newResource(typ, name string, m validated) (*Resource, error) {
	if err := m.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s %s fails validation: %w", typ, name, err)
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s %s: %w", typ, name, err)
	}
	return &Resource{Type: typ, TypeURL: typeURLs[typ], Name: name, Version: hashOf(b), Bytes: b, key: layout.ResourceKey(typ, name)}, nil
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// typed validates m and packs it into an Any, deterministically (RBAC
// policies are a map).
func typed(m validated) (*anypb.Any, error) {
	if err := m.ValidateAll(); err != nil {
		return nil, err
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: b}, nil
}

func mustTyped(m validated) *anypb.Any {
	a, err := typed(m)
	if err != nil {
		// Only constant, empty configs go through here (TestConstantFilters
		// covers them), so this cannot happen at run time.
		panic(fmt.Sprintf("constant filter config %T: %v", m, err))
	}
	return a
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// sdsSecret refers to the SDS secret called name over ADS. The names are
// relative to the proxy: the xds-edge serves, under layout.SecretServiceCert,
// the certificate of the identity in the proxy's own xDS client certificate,
// and under layout.SecretRootCert the mesh's current trust bundle. That keeps
// every cluster and listener identity-agnostic where it can be, so each is
// serialised once and shared by every proxy that needs it.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ads()}
}

func socketAddress(ip string, port int32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// servicePort is one port of a meshed service, with what the builders need.
type servicePort struct {
	svc        model.NN
	port       int32
	name       string
	protocol   Protocol
	targetPort int32
	clusterIPs []string
	// headless: the service has no cluster IP (clusterIP: None); clients
	// reach each endpoint by its own address (headless.go).
	headless bool
	// name of the port's cluster, ClusterName(svc, port)
	clusterName string
}

func (sp servicePort) cluster() string { return sp.clusterName }

// weighted is one weighted cluster of a split.
type weighted struct {
	cluster string
	weight  uint32
}

// matchNothing is an RE2 pattern that no string fully matches: one
// character that is neither white space nor anything else.
const matchNothing = `[^\s\S]`

// upstreamSANs are the SAN matchers of a cluster whose endpoints run as ids.
// Envoy accepts any certificate of the mesh when the list is empty, so a
// destination with no known identity (scaled to zero pods, no selector)
// gets one matcher that matches nothing: its cluster accepts no
// certificate at all until an identity appears.
func upstreamSANs(ids []model.Identity, trustDomain string) []*tlsv3.SubjectAltNameMatcher {
	if len(ids) == 0 {
		return []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: matchNothing}}},
		}}
	}
	sans := make([]*tlsv3.SubjectAltNameMatcher, 0, len(ids))
	for _, id := range ids {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SpiffeID(trustDomain, id)}},
		})
	}
	return sans
}

// buildCluster is the cluster of sp, with the connection settings and
// outlier detection of its UpstreamTrafficSetting up (nil: none).
func buildCluster(sp servicePort, ids []model.Identity, trustDomain string, tp *tlsv3.TlsParameters, up *Upstream) (*Resource, error) {
	c, err := upstreamCluster(sp, ids, trustDomain, tp, up)
	if err != nil {
		return nil, err
	}
	return newResource(layout.TypeCluster, c.Name, c)
}

// upstreamCluster is the EDS cluster of sp, unserialised.
// tp are the MeshConfig's TLS parameters (nil: Envoy's defaults).
func upstreamCluster(sp servicePort, ids []model.Identity, trustDomain string, tp *tlsv3.TlsParameters, up *Upstream) (*clusterv3.Cluster, error) {
	sans := upstreamSANs(ids, trustDomain)
	tlsCtx := &tlsv3.UpstreamTlsContext{
		Sni: sp.svc.Name + "." + sp.svc.Namespace + ".svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tp,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(layout.SecretServiceCert)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
					ValidationContextSdsSecretConfig: sdsSecret(layout.SecretRootCert),
				},
			},
		},
	}
	tlsAny, err := typed(tlsCtx)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: upstream tls: %w", sp.cluster(), err)
	}
	c := &clusterv3.Cluster{
		Name:                 sp.cluster(),
		AltStatName:          sp.cluster(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: sp.cluster()},
		ConnectTimeout:       durationpb.New(time.Second),
		TransportSocket: &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny},
		},
	}
	if sp.protocol == ProtocolGRPC {
		opts, err := typed(&httpoptsv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})
		if err != nil {
			return nil, fmt.Errorf("cluster %s: protocol options: %w", sp.cluster(), err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	}
	if err := applyUpstream(c, sp.protocol, up); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", sp.cluster(), err)
	}
	return c, nil
}

func buildLocalCluster(sp servicePort) (*Resource, error) {
	name := LocalClusterName(sp.svc, sp.port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.0.1", sp.targetPort)}},
			}}}},
		},
	}
	return newResource(layout.TypeCluster, name, c)
}

// endpointAddr is one ready endpoint of a service port.
type endpointAddr struct {
	zone string
	ip   string
	port int32
}

func buildCLA(sp servicePort, eps []endpointAddr) (*Resource, error) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: sp.cluster()}
	var cur *endpointv3.LocalityLbEndpoints
	curZone := ""
	for _, ep := range eps { // sorted by zone, ip, port
		if cur == nil || ep.zone != curZone {
			cur = &endpointv3.LocalityLbEndpoints{}
			if ep.zone != "" {
				cur.Locality = &corev3.Locality{Zone: ep.zone}
			}
			cla.Endpoints = append(cla.Endpoints, cur)
			curZone = ep.zone
		}
		cur.LbEndpoints = append(cur.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(ep.ip, ep.port)}},
			HealthStatus:   corev3.HealthStatus_HEALTHY,
		})
	}
	return newResource(layout.TypeEndpoint, cla.ClusterName, cla)
}

func buildOutboundRoute(sp servicePort, split []weighted) (*Resource, error) {
	rc := outboundRouteConfig(sp, split)
	return newResource(layout.TypeRoute, rc.Name, rc)
}

// outboundRouteConfig is the shared outbound route of sp: every request to
// its cluster, or to the weighted clusters of a split apex.
func outboundRouteConfig(sp servicePort, split []weighted) *routev3.RouteConfiguration {
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: sp.cluster()}}
	if len(split) > 0 {
		wc := &routev3.WeightedCluster{}
		for _, w := range split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: w.cluster, Weight: wrapperspb.UInt32(w.weight)})
		}
		action = &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}
	}
	action.Timeout = durationpb.New(0) // no deadline: streaming and long polls
	rc := &routev3.RouteConfiguration{
		Name: sp.cluster(),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    sp.cluster(),
			Domains: HostNames(sp.svc, sp.port, sp.clusterIPs),
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: action},
			}},
		}},
		ValidateClusters: wrapperspb.Bool(false),
	}
	return rc
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustTyped(&routerv3.Router{})}}
}

// buildServiceListener is the outbound listener of one service port, or
// nil for a port clients cannot address by IP (a headless service). It is
// a "virtual" listener: bound to the port's cluster IPs without binding the
// port, it receives the connections the OutboundListener on 15001 hands
// over by original destination. Its one filter chain is an HTTP connection
// manager with RDS (http, grpc) or a tcp_proxy (tcp; weighted clusters for a
// split apex).
//
// One small listener per service port, rather than a filter chain per
// service in one outbound listener, keeps every resource small (an outbound
// listener of every service passes NATS's 1 MB message limit at ~2,900
// services) and makes a service change touch its own listener only.
func buildServiceListener(sp servicePort, split []weighted, tr *hcmv3.HttpConnectionManager_Tracing) (*Resource, error) {
	return buildServiceListenerAs(sp, split, ServiceListenerName(sp.svc, sp.port), sp.cluster(), tr)
}

// buildServiceListenerAs is buildServiceListener under the listener name
// name, its HTTP connection manager's RDS naming the route rds (a retry
// copy's, retry.go); tr is the MeshConfig's tracing config, or nil.
func buildServiceListenerAs(sp servicePort, split []weighted, name, rds string, tr *hcmv3.HttpConnectionManager_Tracing) (*Resource, error) {
	var addrs []*corev3.Address
	for _, ip := range sp.clusterIPs {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		addrs = append(addrs, socketAddress(a.String(), sp.port))
	}
	if len(addrs) == 0 {
		return nil, nil
	}
	stat := sp.cluster()
	var filter *listenerv3.Filter
	if sp.protocol.IsHTTP() {
		h := &hcmv3.HttpConnectionManager{
			StatPrefix: "outbound:" + stat,
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource: ads(), RouteConfigName: rds,
			}},
			HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
			Tracing:     tr,
		}
		a, err := typed(h)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		filter = &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
	} else {
		t := &tcpproxyv3.TcpProxy{StatPrefix: "outbound:" + stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: sp.cluster()}}
		if len(split) > 0 {
			wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
			for _, w := range split {
				wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: w.cluster, Weight: max(w.weight, 1)})
			}
			t.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
		}
		a, err := typed(t)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		filter = &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
	}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          addrs[0],
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapperspb.Bool(false),
		FilterChains:     []*listenerv3.FilterChain{{Name: "outbound:" + stat, Filters: []*listenerv3.Filter{filter}}},
	}
	for _, a := range addrs[1:] { // dual-stack services
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: a})
	}
	return newResource(layout.TypeListener, name, l)
}

// buildOutboundListener is the OutboundListener: on 15001, it hands each
// connection iptables redirected to the listener of its original
// destination (use_original_dst). A connection no listener of the proxy
// matches (a service it may not reach, or outside the mesh) falls to the
// default chain, which closes it, or with passthrough (MeshConfig's
// enableEgress) forwards it to its original destination through the
// PassthroughCluster.
func buildOutboundListener(passthrough bool) (*Resource, error) {
	closeConn, err := typed(&directresponsev3.Config{})
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", OutboundListener, err)
	}
	def := &listenerv3.FilterChain{
		Name:    "outbound:unknown-destination",
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.direct_response", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: closeConn}}},
	}
	if passthrough {
		f, err := passthroughProxy("outbound:passthrough")
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", OutboundListener, err)
		}
		def = &listenerv3.FilterChain{Name: "outbound:passthrough", Filters: []*listenerv3.Filter{f}}
	}
	l := &listenerv3.Listener{
		Name:               OutboundListener,
		Address:            socketAddress("0.0.0.0", OutboundListenerPort),
		TrafficDirection:   corev3.TrafficDirection_OUTBOUND,
		UseOriginalDst:     wrapperspb.Bool(true),
		DefaultFilterChain: def,
	}
	return newResource(layout.TypeListener, l.Name, l)
}

func originalDst() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustTyped(&origdstv3.OriginalDst{})}}
}

func tlsInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustTyped(&tlsinspv3.TlsInspector{})}}
}
