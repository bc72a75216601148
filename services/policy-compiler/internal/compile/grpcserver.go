package compile

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// The server side of the gRPC flavour (gRFC A36, A39, A41): an xDS-enabled
// gRPC server asks for the listener
// "grpc/server?xds.resource.listening_address=<ip>:<port>" (the template
// its bootstrap's server_listener_resource_name_template sets) of the
// address it listens on. It gets one per IP of the identity's pods and per
// http or grpc target port of the services the identity backs:
//
//	listener  grpc/server?xds.resource.listening_address=<ip>:<port>
//	          address <ip>:<port>; one filter chain whose
//	          DownstreamTlsContext requires a client certificate, both from
//	          the bootstrap's certificate-provider instance; an HTTP
//	          connection manager with an inline route configuration: one
//	          route per HTTPRouteGroup match of the TrafficTargets naming
//	          the identity, each with non_forwarding_action and an
//	          RBACPerRoute allowing the targets' sources (by SPIFFE id),
//	          then a route for every other call, the RBAC filter denying
//	          what no route allows, then the router
//
// In permissive mode one route matches every call and the RBAC filter is
// left out: any client with a mesh certificate is served.

// GRPCServerListenerPrefix is the start of a server listener's name; the
// rest is the listening address as host:port.
const GRPCServerListenerPrefix = "grpc/server?xds.resource.listening_address="

// GRPCServerListenerName is the name of the server listener on ip:port.
func GRPCServerListenerName(ip string, port int32) string {
	return GRPCServerListenerPrefix + net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

func downstreamProviderTLS() (*corev3.TransportSocket, error) {
	a, err := typed(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: certProvider(),
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: certProvider(),
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func buildGRPCServerListener(ip string, p inboundPort, targets []namedTarget, permissive bool, trustDomain string) (*Resource, error) {
	name := GRPCServerListenerName(ip, p.targetPort)
	vh := &routev3.VirtualHost{Name: "inbound", Domains: []string{"*"}}
	wildcard := false
	for _, r := range inboundRoutes(p, targets, permissive) {
		m, ok := grpcMatch(r.match)
		if !ok {
			continue
		}
		wildcard = wildcard || m.isWildcard()
		rt := &routev3.Route{Name: r.match.Key, Match: m.routeMatch(), Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}}
		if !permissive {
			a, err := rbacPerRoute(r, trustDomain)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", name, err)
			}
			rt.TypedPerFilterConfig = map[string]*anypb.Any{httpRBACFilter: a}
		}
		vh.Routes = append(vh.Routes, rt)
	}
	if !wildcard {
		// gRPC fails a call no route matches with UNAVAILABLE; this route
		// has no RBAC override, so the filter denies it: PermissionDenied.
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:   "deny",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
		})
	}
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}},
	}
	if !permissive {
		base, err := denyAll()
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		h.HttpFilters = append(h.HttpFilters, base)
	}
	h.HttpFilters = append(h.HttpFilters, routerFilter())
	hcm, err := typed(h)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	ts, err := downstreamProviderTLS()
	if err != nil {
		return nil, fmt.Errorf("listener %s: downstream tls: %w", name, err)
	}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, p.targetPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Name:            "inbound",
			Filters:         []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
			TransportSocket: ts,
		}},
	}
	return newResource(layout.TypeListener, name, l)
}

// grpcMatch is m as a gRPC server matches it. Every gRPC call is a POST,
// and gRPC's server-side route matching does not see the :method pseudo
// header: a match whose methods include POST matches without a method
// condition, and one whose methods leave POST out matches no gRPC call
// (ok false).
func grpcMatch(m HTTPMatch) (HTTPMatch, bool) {
	if len(m.Methods) == 0 {
		return m, true
	}
	if !slices.Contains(m.Methods, "POST") && !slices.Contains(m.Methods, "*") {
		return m, false
	}
	m.Methods = nil
	return m, true
}

// GRPCServer compiles the server side of the gRPC flavour for identity id:
// a server listener per pod IP of id and per http or grpc target port of
// the services id backs, sorted by name. It reads the state of the last
// Compile and changes nothing; an identity with no group gets nothing.
func (e *Engine) GRPCServer(id model.Identity) ([]*Resource, error) {
	if e.groups.get(id) == nil {
		return nil, nil
	}
	return e.grpcServers(id)
}

// grpcServers builds the server listeners of id from the compiled services
// and policies, whether or not its group is compiled yet.
func (e *Engine) grpcServers(id model.Identity) ([]*Resource, error) {
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		return nil, nil
	}
	var ports []inboundPort
	seen := map[int32]bool{}
	for _, s := range e.m.IdentityServices(id) {
		for _, sp := range e.svcs.ports(s) {
			if !sp.protocol.IsHTTP() || seen[sp.targetPort] {
				continue
			}
			seen[sp.targetPort] = true
			ports = append(ports, inboundPort{targetPort: sp.targetPort, protocol: sp.protocol})
		}
	}
	var targets []namedTarget
	for _, nn := range multimap.Sorted(e.pol.targetsOf(id)) {
		targets = append(targets, namedTarget{name: nn.String(), t: e.pol.target(nn)})
	}
	var out []*Resource
	for _, ip := range e.m.PodIPs(id) {
		for _, p := range ports {
			r, err := buildGRPCServerListener(ip, p, targets, e.m.Permissive(), e.trustDomain())
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
