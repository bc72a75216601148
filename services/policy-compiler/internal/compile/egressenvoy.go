package compile

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// egressConnectTimeout bounds a connection to a destination outside the
// mesh, farther away than a pod.
const egressConnectTimeout = 5 * time.Second

// serverFirstWait is how long a connection to a port that is both https
// and tcp-server-first waits for a TLS client hello before it is matched
// without one.
const serverFirstWait = time.Second

// portPlan is what one identity's Egresses allow on one port, merged.
type portPlan struct {
	port int32
	// vhosts are the http hosts (by host), each with its matches (nil:
	// every request) and the names of the ExternalName Services naming it.
	vhosts map[string]*vhostPlan
	// tls are the https destination ranges ("" for any) with the SNIs
	// allowed there (anySNI: every one).
	tls map[string]*sniPlan
	// tcp are the tcp destination ranges ("" for any).
	tcp map[string]bool
	// serverFirst is set when a tcp-server-first Egress lists the port.
	serverFirst bool
}

type vhostPlan struct {
	all     bool
	matches map[string]HTTPMatch
	aliases []string
	// anyIP is set when an Egress allows the host at any destination
	// address; otherwise ranges are the destinations allowed (OSM's
	// ipAddresses on an http Egress), checked per route by RBAC.
	anyIP  bool
	ranges map[string]bool
}

// restricted reports whether the host is allowed only at some
// destination ranges.
func (v *vhostPlan) restricted() bool { return !v.anyIP && len(v.ranges) > 0 }

type sniPlan struct {
	any   bool
	names map[string]bool
}

// planEgress merges the Egresses of one identity (ps, in name order) per
// port. aliases gives the names of the ExternalName Services whose
// external name is a host.
func planEgress(ps []*egressPolicy, aliases func(host string) []string) []*portPlan {
	byPort := map[int32]*portPlan{}
	for _, p := range ps {
		for _, port := range p.ports {
			pp := byPort[port.Number]
			if pp == nil {
				pp = &portPlan{port: port.Number, vhosts: map[string]*vhostPlan{}, tls: map[string]*sniPlan{}, tcp: map[string]bool{}}
				byPort[port.Number] = pp
			}
			ranges := p.ipRanges
			if len(ranges) == 0 {
				ranges = []string{""}
			}
			switch port.Protocol {
			case policy.EgressHTTP:
				for _, h := range p.hosts {
					v := pp.vhosts[h]
					if v == nil {
						v = &vhostPlan{matches: map[string]HTTPMatch{}, aliases: aliases(h), ranges: map[string]bool{}}
						pp.vhosts[h] = v
					}
					if len(p.ipRanges) == 0 {
						v.anyIP = true
					}
					for _, r := range p.ipRanges {
						v.ranges[r] = true
					}
					if len(p.http) == 0 {
						v.all = true
					}
					for _, m := range p.http {
						v.matches[m.Key] = m
					}
				}
			case policy.EgressHTTPS:
				for _, r := range ranges {
					sp := pp.tls[r]
					if sp == nil {
						sp = &sniPlan{names: map[string]bool{}}
						pp.tls[r] = sp
					}
					if len(p.hosts) == 0 {
						sp.any = true
					}
					for _, h := range p.hosts {
						sp.names[h] = true
						for _, a := range aliases(h) {
							sp.names[a] = true
						}
					}
				}
			default: // tcp, tcp-server-first
				pp.serverFirst = pp.serverFirst || port.Protocol == policy.EgressTCPServerFirst
				for _, r := range ranges {
					pp.tcp[r] = true
				}
			}
		}
	}
	out := make([]*portPlan, 0, len(byPort))
	for _, pp := range byPort {
		out = append(out, pp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out
}

// buildEgress puts id's egress listeners and routes from plans and
// returns the names its group lists.
func (e *Engine) buildEgress(id model.Identity, plans []*portPlan, d *Delta) *egressOut {
	out := &egressOut{dnsClusters: map[string]hostPort{}}
	clusters := map[string]bool{}
	hosts := map[string]bool{}
	for _, pp := range plans {
		if len(pp.vhosts) > 0 {
			name := EgressRouteName(id, pp.port)
			if k, ok := e.put(d, layout.TypeRoute, name)(buildEgressRoute(name, pp)); ok {
				out.keys = append(out.keys, k)
				out.routes = append(out.routes, name)
			}
			for h := range pp.vhosts {
				hosts[h] = true
				c := egressHTTPCluster(h, pp.port)
				clusters[c] = true
				if c != PassthroughCluster {
					out.dnsClusters[c] = hostPort{h, pp.port}
				}
			}
		}
		for _, sp := range pp.tls {
			for h := range sp.names {
				hosts[h] = true
			}
		}
		if len(pp.tls)+len(pp.tcp) > 0 {
			clusters[PassthroughCluster] = true
		}
		name := EgressListenerName(id, pp.port)
		if k, ok := e.put(d, layout.TypeListener, name)(buildEgressListener(id, name, pp, e.tracing)); ok {
			out.keys = append(out.keys, k)
			out.listeners = append(out.listeners, name)
		}
	}
	sort.Strings(out.listeners)
	sort.Strings(out.routes)
	out.clusters = sortedKeys(clusters)
	out.hosts = sortedKeys(hosts)
	return out
}

// egressHTTPCluster is the cluster of an http egress host: its DNS
// cluster, or the original destination for a wildcard host, which has no
// one address to resolve.
func egressHTTPCluster(host string, port int32) string {
	if strings.HasPrefix(host, "*.") {
		return PassthroughCluster
	}
	return EgressClusterName(host, port)
}

// buildEgressRoute is the RouteConfiguration of an http egress port: a
// virtual host per host, with host and host:port (and the names of the
// ExternalName Services naming it) as domains.
func buildEgressRoute(name string, pp *portPlan) (*Resource, error) {
	rc := &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false)}
	seen := map[string]bool{}
	for _, h := range sortedKeys(pp.vhosts) {
		v := pp.vhosts[h]
		var domains []string
		for _, n := range append([]string{h}, v.aliases...) {
			for _, dom := range []string{n, fmt.Sprintf("%s:%d", n, pp.port)} {
				if !seen[dom] {
					seen[dom] = true
					domains = append(domains, dom)
				}
			}
		}
		action := &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: egressHTTPCluster(h, pp.port)},
			Timeout:          durationpb.New(0),
		}}
		vh := &routev3.VirtualHost{Name: fmt.Sprintf("%s:%d", h, pp.port), Domains: domains}
		if v.all {
			vh.Routes = []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: action}}
		} else {
			for _, key := range sortedKeys(v.matches) {
				vh.Routes = append(vh.Routes, &routev3.Route{Name: key, Match: v.matches[key].routeMatch(), Action: action})
			}
		}
		if v.restricted() {
			a, err := destinationRBAC(sortedKeys(v.ranges))
			if err != nil {
				return nil, fmt.Errorf("route %s host %s: %w", name, h, err)
			}
			for _, r := range vh.Routes {
				r.TypedPerFilterConfig = map[string]*anypb.Any{httpRBACFilter: a}
			}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	return newResource(layout.TypeRoute, rc.Name, rc)
}

// buildEgressListener is an identity's egress listener on one port: on
// 0.0.0.0:port without binding it, so that the OutboundListener hands it
// the connections to that port that no service listener takes. Its HTTP
// connection manager carries tr, the MeshConfig's tracing config (nil:
// none).
func buildEgressListener(id model.Identity, name string, pp *portPlan, tr *hcmv3.HttpConnectionManager_Tracing) (*Resource, error) {
	stat := fmt.Sprintf("egress:%s|%d", id, pp.port)
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress("0.0.0.0", pp.port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapperspb.Bool(false),
	}
	if len(pp.tls) > 0 {
		// Only for https: tcp-server-first destinations must not wait for
		// a client hello that never comes first.
		l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector()}
		if pp.serverFirst {
			// Another Egress lists the port for a protocol whose server
			// speaks first: its client sends nothing for the inspector to
			// read, so go on to the chains without an SNI after a short
			// wait rather than close the connection.
			l.ListenerFiltersTimeout = durationpb.New(serverFirstWait)
			l.ContinueOnListenerFiltersTimeout = true
		}
	}
	if len(pp.vhosts) > 0 {
		h := &hcmv3.HttpConnectionManager{
			StatPrefix: stat,
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource: ads(), RouteConfigName: EgressRouteName(id, pp.port),
			}},
			HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
			Tracing:     tr,
		}
		if pp.httpRestricted() {
			// Allows what a route does not restrict; the routes of hosts
			// allowed only at some destinations override it.
			base, err := typed(&httprbacv3.RBAC{})
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", name, err)
			}
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: httpRBACFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: base}}}, h.HttpFilters...)
		}
		a, err := typed(h)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		fc := &listenerv3.FilterChain{Name: stat + ":http", Filters: []*listenerv3.Filter{
			{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}},
		}}
		if len(pp.tls)+len(pp.tcp) > 0 {
			// Apart from the tls chains (transport "tls") and from a tcp
			// chain on every destination (no match at all), which Envoy
			// would refuse as a duplicate.
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	for _, r := range sortedKeys(pp.tls) {
		sp := pp.tls[r]
		m := &listenerv3.FilterChainMatch{TransportProtocol: "tls", PrefixRanges: cidrRanges(r)}
		if !sp.any {
			m.ServerNames = sortedKeys(sp.names)
		}
		f, err := passthroughProxy(stat + ":https")
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: stat + ":https:" + rangeName(r), FilterChainMatch: m, Filters: []*listenerv3.Filter{f}})
	}
	if len(pp.tcp) > 0 {
		var prefixes []*corev3.CidrRange
		if !pp.tcp[""] { // a range of "" allows every destination
			for _, r := range sortedKeys(pp.tcp) {
				prefixes = append(prefixes, cidrRanges(r)...)
			}
		}
		f, err := passthroughProxy(stat + ":tcp")
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		fc := &listenerv3.FilterChain{Name: stat + ":tcp", Filters: []*listenerv3.Filter{f}}
		if len(prefixes) > 0 {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{PrefixRanges: prefixes}
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	return newResource(layout.TypeListener, name, l)
}

// httpRestricted reports whether a host of the port is allowed only at
// some destination ranges.
func (pp *portPlan) httpRestricted() bool {
	for _, v := range pp.vhosts {
		if v.restricted() {
			return true
		}
	}
	return false
}

// destinationRBAC is the RBAC override of a route whose host is allowed
// only at the destination ranges.
func destinationRBAC(ranges []string) (*anypb.Any, error) {
	var ips []*rbacv3.Permission
	for _, r := range ranges {
		for _, c := range cidrRanges(r) {
			ips = append(ips, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}})
		}
	}
	pol := &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ips}}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}
	return typed(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: &rbacv3.RBAC{
		Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"egress-destinations": pol},
	}}})
}

func rangeName(r string) string {
	if r == "" {
		return "any"
	}
	return r
}

// cidrRanges is the CidrRange of a canonical CIDR, none for "".
func cidrRanges(r string) []*corev3.CidrRange {
	p, err := netip.ParsePrefix(r)
	if err != nil {
		return nil
	}
	return []*corev3.CidrRange{{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}}
}

// passthroughProxy is a tcp_proxy to the PassthroughCluster.
func passthroughProxy(stat string) (*listenerv3.Filter, error) {
	a, err := typed(&tcpproxyv3.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: PassthroughCluster}})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// buildEgressDNSCluster is the STRICT_DNS cluster of an http egress host.
func buildEgressDNSCluster(name, host string, port int32) (*Resource, error) {
	c := &clusterv3.Cluster{
		Name:                 name,
		AltStatName:          name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(egressConnectTimeout),
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
			}}}},
		},
	}
	return newResource(layout.TypeCluster, name, c)
}

// buildPassthroughCluster is the ORIGINAL_DST cluster: each connection
// goes to the address the application connected to.
func buildPassthroughCluster() (*Resource, error) {
	c := &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		AltStatName:          PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(egressConnectTimeout),
	}
	return newResource(layout.TypeCluster, c.Name, c)
}
