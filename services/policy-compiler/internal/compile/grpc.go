package compile

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
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
//	                        names; weighted clusters for a split apex; in
//	                        SMI mode a route per gRPC match the service's
//	                        TrafficTargets allow, then one refusing the
//	                        rest at the client (PermissionDenied)
//	cluster   grpc:ns/svc|port  EDS, round robin, UpstreamTlsContext with
//	                        certificate-provider instances (A29) and the
//	                        destination's SPIFFE ids as SAN matchers
//	endpoint  grpc:ns/svc|port  the Envoy flavour's endpoints, with each
//	                        locality weighted by its number of endpoints:
//	                        gRPC (A28) drops localities without a weight,
//	                        and Envoy's shared assignment has none
//
// Only http and grpc ports have a gRPC flavour. The bare "<svc>:<port>"
// form, which a client resolves relative to its own namespace, is one more
// API listener of the port while exactly one meshed service of that name
// has that http or grpc port, and only clients in the service's own
// namespace list it: resources are shared by name across namespaces, so
// when two namespaces each have the name, the one listener cannot route
// each namespace's clients to its own service, and neither gets it (their
// calls to the bare target fail with "resource not found"; the qualified
// forms work).

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

// GRPCBareName is the bare dial-target name of one service port,
// "<svc>:<port>", which resolves only in the service's namespace.
func GRPCBareName(svc model.NN, port int32) string { return fmt.Sprintf("%s:%d", svc.Name, port) }

// GRPCRouteDomains are the virtual host domains of a port's gRPC route:
// its listener names and its bare name (gRPC matches the virtual host
// against the dial target's host:port).
func GRPCRouteDomains(svc model.NN, port int32) []string {
	return append([]string{GRPCBareName(svc, port)}, GRPCListenerNames(svc, port)...)
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

// buildGRPCCluster is the gRPC flavour's cluster of sp, with what gRPC
// applies of its UpstreamTrafficSetting up (nil: none).
func buildGRPCCluster(sp servicePort, ids []model.Identity, trustDomain string, up *Upstream) (*Resource, error) {
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
	applyGRPCUpstream(c, up)
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

// faultFilter is the HTTP filter gRPC's client runs before its router; a
// route's override of it refuses the calls no TrafficTarget allows.
const faultFilter = "envoy.filters.http.fault"

// grpcClientMatches are the matches a gRPC client's route of sp forwards:
// those of the TrafficTargets whose destinations serve sp (ids, the
// service's identities) or, for a split apex, its weighted backends, as
// gRPC matches them (grpcMatch, clientMatch), sorted by key. all is true
// when every call is forwarded: in permissive mode, or when a target
// allows the port over TCP or has a match of every call. The server
// decides which caller a match is for (its RBAC): a route configuration is
// shared by every client, so it holds every source's matches.
func (e *Engine) grpcClientMatches(sp servicePort, ids []model.Identity) (matches []HTTPMatch, all bool) {
	if e.m.Permissive() {
		return nil, true
	}
	type dest struct {
		id   model.Identity
		port int32
	}
	var dests []dest
	for _, id := range ids {
		dests = append(dests, dest{id, sp.targetPort})
	}
	for _, name := range e.m.SplitsForApex(sp.svc) {
		s := e.pol.split(name)
		if s == nil || s.Apex != sp.svc {
			continue
		}
		for _, b := range s.Backends {
			if b.Weight == 0 {
				continue
			}
			for _, bp := range e.servicePorts(b.Service) {
				if bp.port == sp.port {
					for _, id := range e.m.ServiceIdentities(b.Service) {
						dests = append(dests, dest{id, bp.targetPort})
					}
				}
			}
		}
		break
	}
	byKey := map[string]HTTPMatch{}
	for _, d := range dests {
		for nn := range e.pol.targetsOf(d.id) {
			t := e.pol.target(nn)
			if t.AllowsTCPPort(d.port) {
				return nil, true
			}
			for _, m := range t.HTTP {
				g, ok := grpcMatch(m)
				if !ok {
					continue
				}
				if g = clientMatch(g); g.isWildcard() {
					return nil, true
				}
				byKey[g.Key] = g
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		matches = append(matches, byKey[k])
	}
	return matches, false
}

// clientMatch is m as gRPC's client matches it: it sees the call's
// metadata without binary ("-bin") headers and without pseudo-headers, so
// a condition on one of those is left to the server.
func clientMatch(m HTTPMatch) HTTPMatch {
	var hs []HeaderMatch
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Name, ":") && !strings.HasSuffix(h.Name, "-bin") {
			hs = append(hs, h)
		}
	}
	m.Headers = hs
	return m
}

// denyOverride is the fault filter's override of the route that catches the
// calls no match allows: every one fails at the client with
// PermissionDenied, as the server's RBAC would fail it.
func denyOverride() (*anypb.Any, error) {
	return typed(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(codes.PermissionDenied)},
		Percentage: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
	}})
}

// buildGRPCRoute is the route configuration of one service port: the calls
// matches allows (all: every call) to the port's cluster, or to the split's
// backends by weight (split names the Envoy flavour's clusters); every
// other call is refused at the client with PermissionDenied by the fault
// filter. gRPC (A28) reads path prefix, exact and safe_regex (RE2, whole
// path) matchers and header matchers, which are all a match needs.
func buildGRPCRoute(sp servicePort, split []weighted, matches []HTTPMatch, all bool) (*Resource, error) {
	rc, err := grpcRouteConfig(sp, split, matches, all)
	if err != nil {
		return nil, err
	}
	return newResource(layout.TypeRoute, rc.Name, rc)
}

// grpcRouteConfig is buildGRPCRoute's route configuration, unserialised.
func grpcRouteConfig(sp servicePort, split []weighted, matches []HTTPMatch, all bool) (*routev3.RouteConfiguration, error) {
	name := GRPCClusterName(sp.svc, sp.port)
	action := func() *routev3.Route_Route {
		if len(split) == 0 {
			return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}
		}
		wc := &routev3.WeightedCluster{}
		for _, w := range split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: "grpc:" + w.cluster, Weight: wrapperspb.UInt32(w.weight)})
		}
		return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}
	}
	vh := &routev3.VirtualHost{Name: name, Domains: GRPCRouteDomains(sp.svc, sp.port)}
	if all {
		vh.Routes = []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: action(),
		}}
	} else {
		for _, m := range matches {
			vh.Routes = append(vh.Routes, &routev3.Route{Name: m.Key, Match: m.routeMatch(), Action: action()})
		}
		deny, err := denyOverride()
		if err != nil {
			return nil, fmt.Errorf("route %s: deny: %w", name, err)
		}
		// The call needs a cluster to reach the filters: the route's action
		// forwards, and its override aborts every call before it is sent.
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:                 "deny",
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action:               action(),
			TypedPerFilterConfig: map[string]*anypb.Any{faultFilter: deny},
		})
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}, nil
}

// buildGRPCListener is the API listener called name: an HTTP connection
// manager whose routes come over RDS from route.
func buildGRPCListener(name, route string) (*Resource, error) {
	h, err := typed(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: ads(), RouteConfigName: route,
		}},
		// No fault is injected but by a route's override (denyOverride).
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: faultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustTyped(&faultv3.HTTPFault{})}},
			routerFilter(),
		},
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
			if err := add(buildGRPCCluster(sp, e.svcs.ids(ref.nn), td, e.ups.forService(ref.nn))); err != nil {
				return nil, err
			}
			route := GRPCClusterName(sp.svc, sp.port)
			matches, all := e.grpcClientMatches(sp, e.svcs.ids(ref.nn))
			if err := add(buildGRPCRoute(sp, e.splitFor(sp), matches, all)); err != nil {
				return nil, err
			}
			names := GRPCListenerNames(sp.svc, sp.port)
			if ref.nn.Namespace == id.Namespace && e.bare.owner(GRPCBareName(sp.svc, sp.port)) == sp.svc {
				names = append(names, GRPCBareName(sp.svc, sp.port))
			}
			for _, l := range names {
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
