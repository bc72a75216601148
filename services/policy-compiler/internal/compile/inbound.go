package compile

import (
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

const httpRBACFilter = "envoy.filters.http.rbac"

// inboundPort is one destination port a proxy serves: the target port of
// one or more of the services its identity backs.
type inboundPort struct {
	targetPort int32
	protocol   Protocol
	// local is the cluster the chain forwards to (the first service, sorted).
	local string
	// up is the UpstreamTrafficSetting of that service (nil: none): its
	// rate limits and route timeouts (upstream_envoy.go).
	up *Upstream
}

// namedTarget is an accepted TrafficTarget and its name ("ns/name").
type namedTarget struct {
	name string
	t    *Target
}

func principals(trustDomain string, ids []model.Identity) []*rbacv3.Principal {
	out := make([]*rbacv3.Principal, 0, len(ids))
	for _, id := range ids {
		out = append(out, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SpiffeID(trustDomain, id)}},
		}}})
	}
	return out
}

func anyPermission() []*rbacv3.Permission {
	return []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
}

func policyFor(trustDomain string, sources []model.Identity) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: anyPermission(), Principals: principals(trustDomain, sources)}
}

// downstreamTLS is the inbound mTLS, with the MeshConfig's TLS parameters
// tp (nil: Envoy's defaults).
func downstreamTLS(tp *tlsv3.TlsParameters) (*corev3.TransportSocket, error) {
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tp,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(layout.SecretServiceCert)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: sdsSecret(layout.SecretRootCert),
			},
		},
	}
	a, err := typed(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// buildInboundListener builds the inbound listener of identity id: one TLS
// filter chain per destination port, with RBAC from targets (nil targets
// and permissive: any authenticated mesh client), then the chains of its
// IngressBackends for traffic from outside the mesh (ingress.go). Every
// HTTP connection manager carries tr, the MeshConfig's tracing config
// (nil: none).
func buildInboundListener(id model.Identity, ports []inboundPort, targets []namedTarget, permissive bool, trustDomain string, tp *tlsv3.TlsParameters, tr *hcmv3.HttpConnectionManager_Tracing, ingress ...ingressChain) (*Resource, error) {
	l := &listenerv3.Listener{
		Name:             InboundListenerName(id),
		Address:          socketAddress("0.0.0.0", InboundListenerPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{originalDst(), tlsInspector()},
	}
	for _, p := range ports {
		ts, err := downstreamTLS(tp)
		if err != nil {
			return nil, fmt.Errorf("inbound listener %s: %w", l.Name, err)
		}
		chainName := fmt.Sprintf("inbound:%s|%d", id, p.targetPort)
		var filters []*listenerv3.Filter
		if p.protocol.IsHTTP() {
			f, err := inboundHTTP(chainName, p, targets, permissive, trustDomain, tr)
			if err != nil {
				return nil, fmt.Errorf("inbound listener %s: %w", l.Name, err)
			}
			filters = append(filters, f)
		} else {
			fs, err := inboundTCP(chainName, p, targets, permissive, trustDomain)
			if err != nil {
				return nil, fmt.Errorf("inbound listener %s: %w", l.Name, err)
			}
			filters = append(filters, fs...)
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: chainName,
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort:   wrapperspb.UInt32(uint32(p.targetPort)),
				TransportProtocol: "tls",
			},
			TransportSocket: ts,
			Filters:         filters,
		})
	}
	for _, c := range ingress {
		fc, err := buildIngressChain(c, tp, tr)
		if err != nil {
			return nil, fmt.Errorf("inbound listener %s: %s: %w", l.Name, c.name, err)
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	return newResource(layout.TypeListener, l.Name, l)
}

func inboundTCP(stat string, p inboundPort, targets []namedTarget, permissive bool, trustDomain string) ([]*listenerv3.Filter, error) {
	out, err := tcpRateLimit(stat, p.up)
	if err != nil {
		return nil, err
	}
	if !permissive {
		rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
		for _, nt := range targets {
			if nt.t.HasHTTPRule || nt.t.AllowsTCPPort(p.targetPort) {
				rules.Policies[nt.name] = policyFor(trustDomain, nt.t.Sources)
			}
		}
		a, err := typed(&netrbacv3.RBAC{StatPrefix: stat, Rules: rules})
		if err != nil {
			return nil, fmt.Errorf("network rbac: %w", err)
		}
		out = append(out, &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	a, err := typed(&tcpproxyv3.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: p.local}})
	if err != nil {
		return nil, fmt.Errorf("tcp proxy: %w", err)
	}
	return append(out, &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}), nil
}

// inboundRoute is one merged HTTP match and the targets allowing it.
type inboundRoute struct {
	match   HTTPMatch
	allowed map[string][]model.Identity // target name → sources
}

// inboundRoutes are the routes of an http port: one per distinct match of
// the TrafficTargets' HTTPRouteGroups (a wildcard for a target that allows
// the port over TCP), each with the sources each target allows, specific
// matches first; one wildcard route allowing anyone in permissive mode.
func inboundRoutes(p inboundPort, targets []namedTarget, permissive bool) []*inboundRoute {
	wildcard := HTTPMatch{Key: "*"}
	var routes []*inboundRoute
	if permissive {
		routes = []*inboundRoute{{match: wildcard}}
	} else {
		byKey := map[string]*inboundRoute{}
		add := func(m HTTPMatch, nt namedTarget) {
			r := byKey[m.Key]
			if r == nil {
				r = &inboundRoute{match: m, allowed: map[string][]model.Identity{}}
				byKey[m.Key] = r
				routes = append(routes, r)
			}
			r.allowed[nt.name] = nt.t.Sources
		}
		for _, nt := range targets {
			for _, m := range nt.t.HTTP {
				add(m, nt)
			}
			if nt.t.AllowsTCPPort(p.targetPort) {
				add(wildcard, nt)
			}
		}
		// Specific matches first, so that a wildcard does not shadow them.
		sort.Slice(routes, func(i, j int) bool {
			wi, wj := routes[i].match.isWildcard(), routes[j].match.isWildcard()
			if wi != wj {
				return wj
			}
			return routes[i].match.Key < routes[j].match.Key
		})
	}
	return routes
}

// rbacPerRoute is the RBAC override of route r: its allowed sources.
func rbacPerRoute(r *inboundRoute, trustDomain string) (*anypb.Any, error) {
	pol := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	for name, srcs := range r.allowed {
		pol.Policies[name] = policyFor(trustDomain, srcs)
	}
	a, err := typed(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: pol}})
	if err != nil {
		return nil, fmt.Errorf("route %s rbac: %w", r.match.Key, err)
	}
	return a, nil
}

// denyAll is the RBAC filter that, without a route's override, denies.
func denyAll() (*hcmv3.HttpFilter, error) {
	base, err := typed(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})
	if err != nil {
		return nil, fmt.Errorf("http rbac: %w", err)
	}
	return &hcmv3.HttpFilter{Name: httpRBACFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: base}}, nil
}

func inboundHTTP(stat string, p inboundPort, targets []namedTarget, permissive bool, trustDomain string, tr *hcmv3.HttpConnectionManager_Tracing) (*listenerv3.Filter, error) {
	routes := inboundRoutes(p, targets, permissive)
	if permissive {
		routes = append(upstreamRoutes(p.up), routes...)
	}
	vh := &routev3.VirtualHost{Name: stat, Domains: []string{"*"}}
	for _, r := range routes {
		rt := &routev3.Route{
			Name:   r.match.Key,
			Match:  r.match.routeMatch(),
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: p.local}, Timeout: durationpb.New(0)}},
		}
		if !permissive {
			a, err := rbacPerRoute(r, trustDomain)
			if err != nil {
				return nil, err
			}
			rt.TypedPerFilterConfig = map[string]*anypb.Any{httpRBACFilter: a}
		}
		if err := applyRouteSetting(rt, stat, r.match, p.up); err != nil {
			return nil, err
		}
		vh.Routes = append(vh.Routes, rt)
	}
	if err := applyVirtualHostLimit(vh, stat, p.up); err != nil {
		return nil, err
	}
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     stat,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: stat, VirtualHosts: []*routev3.VirtualHost{vh}}},
		Tracing:        tr,
	}
	normalizePaths(h)
	if !permissive {
		// Deny by default; each route's RBACPerRoute allows its sources.
		base, err := denyAll()
		if err != nil {
			return nil, err
		}
		h.HttpFilters = append(h.HttpFilters, base)
	}
	if limitsHTTP(p.up) {
		f, err := httpRateLimitFilter(stat)
		if err != nil {
			return nil, err
		}
		h.HttpFilters = append(h.HttpFilters, f)
	}
	h.HttpFilters = append(h.HttpFilters, routerFilter())
	a, err := typed(h)
	if err != nil {
		return nil, fmt.Errorf("http connection manager: %w", err)
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// normalizePaths makes the inbound connection manager decide and forward on
// the normalized path, so that a route allowed for /books.* does not also
// match /books/../admin (the CVE-2021-39156 class): %2F and %5C are
// unescaped and the client is redirected to the result (Envoy's advice for
// a proxy that authorizes by path), then dot segments are resolved and
// percent-encoded unreserved characters decoded (RFC 3986), then repeated
// slashes merged. The route matches and the RBAC filter see only the
// result, and the application receives it.
func normalizePaths(h *hcmv3.HttpConnectionManager) {
	h.NormalizePath = wrapperspb.Bool(true)
	h.MergeSlashes = true
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
}

func (m HTTPMatch) isWildcard() bool {
	return m.PathRegex == "" && len(m.Methods) == 0 && len(m.Headers) == 0
}

func (m HTTPMatch) routeMatch() *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m.PathRegex != "" {
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	}
	if len(m.Methods) > 0 {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(m.Methods, "|")}},
			}},
		})
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name: h.Name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}},
			}},
		})
	}
	return rm
}
