package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// ingressPolicy is an accepted IngressBackend: libs/policy's, with its
// HTTPRouteGroup matches in the compiler's form.
type ingressPolicy struct {
	backends   []policy.IngressPort
	services   []model.NN // Service sources: their endpoints' IPs are admitted
	ipRanges   []string
	principals []string
	http       []HTTPMatch
}

// ingresses holds the IngressBackends: the accepted version of each and
// the indexes a change follows. An IngressBackend change rebuilds the
// inbound listeners of its old and new backends' identities; an endpoint
// change of a source Service those of the IngressBackends naming it; an
// HTTPRouteGroup change reviews the IngressBackends naming it again.
type ingresses struct {
	accepted  accepted[*ingressPolicy]
	byBackend map[model.NN]set[model.NN] // backend Service → accepted IngressBackends
	bySource  map[model.NN]set[model.NN] // source Service → accepted IngressBackends
	byGroup   map[model.NN]set[model.NN] // HTTPRouteGroup → observed IngressBackends naming it
	groups    map[model.NN][]model.NN    // observed IngressBackend → the HTTPRouteGroups it names
}

func newIngresses() ingresses {
	return ingresses{
		accepted:  accepted[*ingressPolicy]{},
		byBackend: map[model.NN]set[model.NN]{},
		bySource:  map[model.NN]set[model.NN]{},
		byGroup:   map[model.NN]set[model.NN]{},
		groups:    map[model.NN][]model.NN{},
	}
}

// ingressBackend returns the observed IngressBackend nn, or nil.
func (e *Engine) ingressBackend(nn model.NN) *meshv1.IngressBackend {
	ib, _ := e.m.Object(layout.KindIngressBackend, nn).(*meshv1.IngressBackend)
	return ib
}

// ingressObserved marks the IngressBackend nn for review and records the
// HTTPRouteGroups it names.
func (e *Engine) ingressObserved(nn model.NN) {
	e.dirty.policy(layout.KindIngressBackend, nn)
	for _, g := range e.ing.groups[nn] {
		multimap.Remove(e.ing.byGroup, g, nn)
	}
	delete(e.ing.groups, nn)
	if ib := e.ingressBackend(nn); ib != nil {
		for _, m := range ib.GetMatches() {
			g := model.NN{Namespace: nn.Namespace, Name: m.GetName()}
			e.ing.groups[nn] = append(e.ing.groups[nn], g)
			multimap.Add(e.ing.byGroup, g, nn)
		}
	}
}

// ingressSourceChanged marks the inbound listeners that admit the
// endpoints of Service svc (a source of accepted IngressBackends).
func (e *Engine) ingressSourceChanged(svc model.NN) {
	for nn := range e.ing.bySource[svc] {
		e.markIngressBackers(e.ing.accepted[nn], nn.Namespace)
	}
}

// markIngressBackers marks the inbound listeners of the identities backing
// the backends of p (nil: none).
func (e *Engine) markIngressBackers(p *ingressPolicy, namespace string) {
	if p == nil {
		return
	}
	for _, b := range p.backends {
		for _, id := range e.m.ServiceIdentities(model.NN{Namespace: namespace, Name: b.Service}) {
			e.dirty.inbound(id)
		}
	}
}

// resolveIngress validates an IngressBackend and resolves its matches
// against the accepted HTTPRouteGroups (libs/policy's
// ResolveIngressBackend, the rules the webhook applies on the object alone).
func (e *Engine) resolveIngress(nn model.NN, obj *meshv1.IngressBackend) (*ingressPolicy, *Rejection) {
	ib, rej := policy.ResolveIngressBackend(nn.Namespace, obj, routeLookup{&e.pol})
	if rej != nil {
		return nil, rej
	}
	p := &ingressPolicy{backends: ib.Backends, ipRanges: ib.IPRanges, principals: ib.Principals}
	for _, s := range ib.Services {
		p.services = append(p.services, model.NN{Namespace: s.Namespace, Name: s.Name})
	}
	for _, m := range ib.HTTP {
		p.http = append(p.http, HTTPMatch(m))
	}
	return p, nil
}

// compileIngresses reviews the dirty IngressBackends (and those naming an
// HTTPRouteGroup reviewed again) and records the accepted version of each;
// a rejected one keeps its last accepted version.
func (e *Engine) compileIngresses(d *Delta) {
	for hrg := range e.dirty.hrg {
		for nn := range e.ing.byGroup[hrg] {
			e.dirty.policy(layout.KindIngressBackend, nn)
		}
	}
	dirty := e.dirty.objs[layout.KindIngressBackend]
	rejudge := set[model.NN]{}
	for _, nn := range multimap.Sorted(dirty) {
		p, ok := reviewWarn(&e.pol, d, layout.KindIngressBackend, nn, e.ingressBackend(nn), e.resolveIngress,
			func(p *ingressPolicy) *Rejection { return e.ingressWarning(nn, p) })
		if !ok {
			continue
		}
		old, changed := e.ing.accepted.set(nn, p, p != nil)
		if !changed {
			continue
		}
		for _, x := range []*ingressPolicy{old, p} {
			if x == nil {
				continue
			}
			e.markIngressBackers(x, nn.Namespace)
			for _, b := range x.backends {
				svc := model.NN{Namespace: nn.Namespace, Name: b.Service}
				for peer := range e.ing.byBackend[svc] {
					if _, reviewed := dirty[peer]; !reviewed && nn.Less(peer) {
						rejudge.add(peer)
					}
				}
				if x == old {
					multimap.Remove(e.ing.byBackend, svc, nn)
				} else {
					multimap.Add(e.ing.byBackend, svc, nn)
				}
			}
			for _, s := range x.services {
				if x == old {
					multimap.Remove(e.ing.bySource, s, nn)
				} else {
					multimap.Add(e.ing.bySource, s, nn)
				}
			}
		}
	}
	// An IngressBackend sorting after one that changed, on one of its
	// backend Services, may have lost or won a port: judged again, unless
	// its last review rejected it (it keeps that verdict and version).
	for _, nn := range multimap.Sorted(rejudge) {
		ib, p := e.ingressBackend(nn), e.ing.accepted[nn]
		if ib == nil || p == nil || e.pol.rejectedNow(layout.KindIngressBackend, nn) {
			continue
		}
		if st := e.pol.judge(layout.KindIngressBackend, nn, ib.GetApiVersion(), ib.GetMeta(), nil, e.ingressWarning(nn, p)); st != nil {
			d.Statuses = append(d.Statuses, st)
		}
	}
}

// ingressWarning is the warning on the accepted IngressBackend nn (p) when
// a backend port of it is also a backend port of an accepted IngressBackend
// sorting before it by name, in its namespace: that one's filter chain
// serves the port (ingressChains), this one's does not. nil when none is.
func (e *Engine) ingressWarning(nn model.NN, p *ingressPolicy) *Rejection {
	for _, b := range p.backends {
		svc := model.NN{Namespace: nn.Namespace, Name: b.Service}
		for _, peer := range multimap.Sorted(e.ing.byBackend[svc]) {
			if !peer.Less(nn) {
				break
			}
			if !slices.ContainsFunc(e.ing.accepted[peer].backends, func(o policy.IngressPort) bool { return o.Service == b.Service && o.Port == b.Port }) {
				continue
			}
			i := slices.IndexFunc(e.ingressBackend(nn).GetBackends(), func(x *meshv1.IngressBackendBackend) bool {
				return x.GetName() == b.Service && x.GetPort().GetNumber() == b.Port
			})
			return reject(ReasonIngressBackendPortTaken, fmt.Sprintf("spec.backends[%d]", i),
				"port %d of Service %s is also a backend of IngressBackend %s, which serves it: one IngressBackend admits traffic to a backend port, the first by name",
				b.Port, svc, peer.Name)
		}
	}
	return nil
}

// ReasonIngressBackendPortTaken warns that a backend port of an
// IngressBackend is served by another IngressBackend's filter chain.
const ReasonIngressBackendPortTaken = "IngressBackendPortTaken"

// ingressChain is one filter chain of an inbound listener for traffic
// from outside the mesh to a backend port.
type ingressChain struct {
	name     string // "ingress:<ns>/<IngressBackend>|<port>"
	backend  policy.IngressPort
	local    string   // the local cluster it forwards to
	ranges   []string // source CIDRs; empty: any address (https by SNI or principal)
	policy   *ingressPolicy
	validate bool // https: validate the client certificate
}

// ingressChains are the ingress filter chains of identity id, which serves
// the Services svcs: one per backend port of the accepted IngressBackends
// naming one of them, by port. Where two IngressBackends name the same
// port of the identity, the first by name takes it. A backend admitted by
// address whose addresses resolve to none (a source Service without
// endpoints) gets no chain: no one is admitted.
func (e *Engine) ingressChains(svcs []model.NN) []ingressChain {
	var out []ingressChain
	taken := map[int32]bool{}
	type named struct {
		nn  model.NN
		svc model.NN
	}
	var ibs []named
	for _, s := range svcs {
		for nn := range e.ing.byBackend[s] {
			ibs = append(ibs, named{nn, s})
		}
	}
	sort.Slice(ibs, func(i, j int) bool {
		if ibs[i].nn != ibs[j].nn {
			return ibs[i].nn.String() < ibs[j].nn.String()
		}
		return ibs[i].svc.String() < ibs[j].svc.String()
	})
	for _, x := range ibs {
		p := e.ing.accepted[x.nn]
		for _, b := range p.backends {
			if b.Service != x.svc.Name || taken[b.Port] {
				continue
			}
			local := ""
			for _, sp := range e.svcs.ports(x.svc) {
				if sp.targetPort == b.Port {
					local = LocalClusterName(x.svc, sp.port)
					break
				}
			}
			if local == "" {
				continue // the Service has no port to the backend port
			}
			ranges := e.ingressRanges(p)
			byAddress := len(p.services) > 0 || len(p.ipRanges) > 0
			if byAddress && len(ranges) == 0 {
				continue
			}
			taken[b.Port] = true
			out = append(out, ingressChain{
				name:     fmt.Sprintf("ingress:%s|%d", x.nn, b.Port),
				backend:  b,
				local:    local,
				ranges:   ranges,
				policy:   p,
				validate: b.Protocol == policy.IngressHTTPS && !b.SkipClientCertValidation,
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].backend.Port < out[j].backend.Port })
	return out
}

// ingressRanges are the source CIDRs of p: its IP ranges and the endpoint
// addresses of its source Services, as host prefixes, sorted.
func (e *Engine) ingressRanges(p *ingressPolicy) []string {
	out := append([]string(nil), p.ipRanges...)
	for _, s := range p.services {
		for _, sl := range e.m.EndpointSlices(s) {
			for _, ep := range sl.GetEndpoints() {
				for _, a := range ep.GetAddresses() {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, netip.PrefixFrom(ip, ip.BitLen()).String())
					}
				}
			}
		}
	}
	sort.Strings(out)
	return policy.Dedupe(out)
}

func cidrRange(c string) *corev3.CidrRange {
	p := netip.MustParsePrefix(c)
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// buildIngressChain builds an ingress filter chain: matched by destination
// port, source ranges and, for https, TLS and SNI; a network RBAC filter
// admits only the listed source addresses and (https with validation and
// principals) certificate SANs; then HTTP to the local cluster, restricted
// to the HTTPRouteGroup matches when there are any, traced with tr (the
// MeshConfig's tracing config; nil: none).
func buildIngressChain(c ingressChain, tp *tlsv3.TlsParameters, tr *hcmv3.HttpConnectionManager_Tracing) (*listenerv3.FilterChain, error) {
	fc := &listenerv3.FilterChain{
		Name:             c.name,
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(c.backend.Port)), TransportProtocol: "raw_buffer"},
	}
	for _, r := range c.ranges {
		fc.FilterChainMatch.SourcePrefixRanges = append(fc.FilterChainMatch.SourcePrefixRanges, cidrRange(r))
	}
	var ids []*rbacv3.Principal
	if len(c.ranges) > 0 {
		var ips []*rbacv3.Principal
		for _, r := range c.ranges {
			ips = append(ips, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange(r)}})
		}
		ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ips}}})
	}
	if c.backend.Protocol == policy.IngressHTTPS {
		fc.FilterChainMatch.TransportProtocol = "tls"
		fc.FilterChainMatch.ServerNames = c.backend.SNIHosts
		ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tp,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(layout.SecretServiceCert)},
		}}
		if c.validate {
			ctx.RequireClientCertificate = wrapperspb.Bool(true)
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: sdsSecret(layout.SecretRootCert),
			}
			if len(c.policy.principals) > 0 {
				var sans []*rbacv3.Principal
				for _, p := range c.policy.principals {
					sans = append(sans, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
						PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}},
					}}})
				}
				ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: sans}}})
			}
		}
		a, err := typed(ctx)
		if err != nil {
			return nil, err
		}
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	if len(ids) > 0 {
		who := ids[0]
		if len(ids) > 1 {
			who = &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
		}
		a, err := typed(&netrbacv3.RBAC{StatPrefix: c.name, Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"ingress-sources": {Permissions: anyPermission(), Principals: []*rbacv3.Principal{who}},
		}}})
		if err != nil {
			return nil, fmt.Errorf("network rbac: %w", err)
		}
		fc.Filters = append(fc.Filters, &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	matches := c.policy.http
	if len(matches) == 0 {
		matches = []HTTPMatch{{Key: "*"}}
	}
	vh := &routev3.VirtualHost{Name: c.name, Domains: []string{"*"}}
	for _, m := range matches {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:   m.Key,
			Match:  m.routeMatch(),
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c.local}, Timeout: durationpb.New(0)}},
		})
	}
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     c.name,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: c.name, VirtualHosts: []*routev3.VirtualHost{vh}}},
		HttpFilters:    []*hcmv3.HttpFilter{routerFilter()},
		Tracing:        tr,
	}
	normalizePaths(h)
	a, err := typed(h)
	if err != nil {
		return nil, fmt.Errorf("http connection manager: %w", err)
	}
	fc.Filters = append(fc.Filters, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	return fc, nil
}
