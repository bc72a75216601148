package compile

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// The gRPC flavour (proxyless gRPC) of an identity's client-side resources.
//
// gRPC's xDS client (gRFC A27, A28, A29) reads what Envoy reads, with these
// differences, which the Envoy flavour's shared resources cannot serve:
//
//	listener  <svc>.<ns>:<port>, <svc>.<ns>.svc:<port>,
//	          <svc>.<ns>.svc.cluster.local:<port>
//	                        API listeners (HCM with RDS), named by the dial
//	                        target's host:port: xds:///bookstore.bookstore:14001
//	                        asks for the listener "bookstore.bookstore:14001"
//	route     grpc:ns/svc|port  one virtual host whose domains are those
//	                        names; weighted clusters for a split apex
//	cluster   grpc:ns/svc|port  EDS, round robin, UpstreamTlsContext with
//	                        certificate-provider instances (A29) and the
//	                        destination's SPIFFE ids as SAN matchers
//	endpoint  grpc:ns/svc|port  the Envoy flavour's endpoints, with each
//	                        locality weighted by its number of endpoints:
//	                        gRPC (A28) drops localities without a weight,
//	                        and Envoy's shared assignment has none
//
// Only http and grpc ports have a gRPC flavour. The bare "<svc>:<port>"
// form, which a client resolves relative to its own namespace, has none:
// resources are shared by name across namespaces, so that name would need
// one resource per client namespace.

// GRPCClusterName is the name of the gRPC-flavour cluster (and route
// configuration) of one service port: "grpc:ns/svc|port".
func GRPCClusterName(svc model.NN, port int32) string { return "grpc:" + ClusterName(svc, port) }

// GRPCListenerNames are the API listener names of one service port: the
// host:port forms of a gRPC dial target that name the service's namespace.
func GRPCListenerNames(svc model.NN, port int32) []string {
	base := svc.Name + "." + svc.Namespace
	return []string{
		fmt.Sprintf("%s:%d", base, port),
		fmt.Sprintf("%s.svc:%d", base, port),
		fmt.Sprintf("%s.svc.cluster.local:%d", base, port),
	}
}

// certProvider is the bootstrap's certificate-provider instance.
func certProvider() *tlsv3.CertificateProviderPluginInstance {
	return &tlsv3.CertificateProviderPluginInstance{InstanceName: layout.CertProviderInstance, CertificateName: "default"}
}

// grpcSANs are gRPC's SAN matchers for a destination whose endpoints run as
// ids. gRPC reads match_subject_alt_names (not the typed matchers), and
// accepts any certificate its roots sign when the list is empty, so a
// destination with no known identity gets one matcher that matches nothing.
func grpcSANs(ids []model.Identity, trustDomain string) []*matcherv3.StringMatcher {
	if len(ids) == 0 {
		return []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: matchNothing}}}}
	}
	out := make([]*matcherv3.StringMatcher, 0, len(ids))
	for _, id := range ids {
		out = append(out, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SpiffeID(trustDomain, id)}})
	}
	return out
}

func buildGRPCCluster(sp servicePort, ids []model.Identity, trustDomain string) (*Resource, error) {
	name := GRPCClusterName(sp.svc, sp.port)
	tlsAny, err := typed(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: certProvider(),
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: certProvider(),
			MatchSubjectAltNames:          grpcSANs(ids, trustDomain),
		}},
	}})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: upstream tls: %w", name, err)
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		TransportSocket: &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny},
		},
	}
	return newResource(layout.TypeCluster, name, c)
}

// buildGRPCCLA is the assignment of the gRPC cluster of sp: eps by zone,
// each zone weighted by its number of endpoints.
func buildGRPCCLA(sp servicePort, eps []endpointAddr) (*Resource, error) {
	name := GRPCClusterName(sp.svc, sp.port)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	var cur *endpointv3.LocalityLbEndpoints
	for i, ep := range eps { // sorted by zone, ip, port
		if cur == nil || ep.zone != eps[i-1].zone {
			cur = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: ep.zone}, LoadBalancingWeight: wrapperspb.UInt32(0)}
			cla.Endpoints = append(cla.Endpoints, cur)
		}
		cur.LoadBalancingWeight.Value++
		cur.LbEndpoints = append(cur.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(ep.ip, ep.port)}},
			HealthStatus:   corev3.HealthStatus_HEALTHY,
		})
	}
	return newResource(layout.TypeEndpoint, name, cla)
}

// buildGRPCRoute is the route configuration of one service port: every
// call to the port's cluster, or to the split's backends by weight (split
// names the Envoy flavour's clusters).
func buildGRPCRoute(sp servicePort, split []weighted) (*Resource, error) {
	name := GRPCClusterName(sp.svc, sp.port)
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}
	if len(split) > 0 {
		wc := &routev3.WeightedCluster{}
		for _, w := range split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: "grpc:" + w.cluster, Weight: wrapperspb.UInt32(w.weight)})
		}
		action = &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}
	}
	rc := &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: GRPCListenerNames(sp.svc, sp.port),
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: action},
			}},
		}},
	}
	return newResource(layout.TypeRoute, name, rc)
}

// buildGRPCListener is the API listener called name: an HTTP connection
// manager whose routes come over RDS from route.
func buildGRPCListener(name, route string) (*Resource, error) {
	h, err := typed(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: ads(), RouteConfigName: route,
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	})
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	l := &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: h}}
	return newResource(layout.TypeListener, name, l)
}

// GRPCClient compiles the client side of the gRPC flavour for identity id:
// the API listeners, routes and clusters of every http and grpc port of the
// services id reaches (as its Envoy group does), and their shared
// ClusterLoadAssignments, sorted by key. It reads the state of the last
// Compile and changes nothing; an identity with no group gets nothing.
func (e *Engine) GRPCClient(id model.Identity) ([]*Resource, error) {
	if e.groups.get(id) == nil {
		return nil, nil
	}
	td := e.trustDomain()
	var out []*Resource
	add := func(r *Resource, err error) error {
		if err != nil {
			return err
		}
		out = append(out, r)
		return nil
	}
	for _, ref := range e.reach.reached(id) {
		for _, sp := range e.svcs.ports(ref.nn) {
			if !sp.protocol.IsHTTP() {
				continue
			}
			if err := add(buildGRPCCluster(sp, e.svcs.ids(ref.nn), td)); err != nil {
				return nil, err
			}
			route := GRPCClusterName(sp.svc, sp.port)
			if err := add(buildGRPCRoute(sp, e.splitFor(sp))); err != nil {
				return nil, err
			}
			for _, l := range GRPCListenerNames(sp.svc, sp.port) {
				if err := add(buildGRPCListener(l, route)); err != nil {
					return nil, err
				}
			}
			if err := add(buildGRPCCLA(sp, e.endpoints(sp))); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}
