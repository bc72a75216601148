package compile

import (
	"fmt"
	"slices"
	"sort"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// Egress: traffic from a proxy to destinations outside the mesh.
//
// An accepted Egress (OSM's policy.openservicemesh.io/v1alpha1 kind) gives
// each of its source identities, per port it lists:
//
//	listener  egress-listener:ns/sa|port  0.0.0.0:port, bind_to_port false: the
//	                                 OutboundListener hands it the connections to
//	                                 that port that no service listener (bound to a
//	                                 cluster IP) takes. Chains: http, an HCM with RDS
//	                                 (plain text); https, tcp_proxy per destination
//	                                 range with the allowed SNIs (tls_inspector);
//	                                 tcp and tcp-server-first, tcp_proxy by
//	                                 destination range (no listener filter, so a
//	                                 server that speaks first is not kept waiting)
//	route     egress:ns/sa|port      http: a virtual host per host (host and
//	                                 host:port; an ExternalName Service naming the
//	                                 host adds its own names), routes from the
//	                                 Egress's HTTPRouteGroup matches or all of "/";
//	                                 an Egress with ipAddresses allows its hosts only
//	                                 at those destinations (RBAC per route)
//	cluster   egress:host:port       http: STRICT_DNS to host:port, shared by
//	                                 every identity that reaches it
//	cluster   passthrough-outbound   ORIGINAL_DST: https, tcp, and http to a
//	                                 wildcard host go to the address the
//	                                 application connected to
//
// MeshConfig's enableEgress turns on global passthrough instead: the
// OutboundListener's default chain forwards every destination no listener
// takes to passthrough-outbound (instead of closing it), every proxy lists
// the two, and the Egress objects are not applied (OSM's behaviour). An
// ExternalName Service then reaches its external name through it, its
// clients resolving the name to the outside address.
//
// A change costs what it touches: an Egress change rebuilds its old and
// new sources' egress resources and groups; an HTTPRouteGroup change
// reviews the Egresses naming it; a change to an ExternalName Service
// rebuilds the identities whose egress names its external name.

// PassthroughCluster is the ORIGINAL_DST cluster of egress traffic: it
// connects to the destination the application connected to.
const PassthroughCluster = "passthrough-outbound"

// EgressListenerName is the egress listener of identity id on port.
func EgressListenerName(id model.Identity, port int32) string {
	return fmt.Sprintf("egress-listener:%s|%d", id, port)
}

// EgressRouteName is the RouteConfiguration of identity id's http egress
// on port.
func EgressRouteName(id model.Identity, port int32) string {
	return fmt.Sprintf("egress:%s|%d", id, port)
}

// EgressClusterName is the DNS cluster of an http egress host on port,
// shared by every identity that reaches it.
func EgressClusterName(host string, port int32) string {
	return fmt.Sprintf("egress:%s:%d", host, port)
}

// egressPolicy is an accepted Egress.
type egressPolicy struct {
	sources  []model.Identity
	hosts    []string
	ipRanges []string
	ports    []policy.EgressPort
	http     []HTTPMatch
}

// egressOut is what one identity's egress compiled to.
type egressOut struct {
	keys                        []resKey            // its own listeners and routes
	listeners, routes, clusters []string            // the names its group lists, sorted
	hosts                       []string            // the egress hosts it names
	dnsClusters                 map[string]hostPort // its DNS clusters
}

type hostPort struct {
	host string
	port int32
}

// egressState is the engine's egress part: the accepted Egresses, what
// each identity's egress compiled to, the shared clusters' users, and what
// the next Compile rebuilds.
type egressState struct {
	accepted  accepted[*egressPolicy]
	bySource  map[model.Identity]set[model.NN] // identity → accepted Egresses naming it as a source
	out       map[model.Identity]*egressOut
	users     map[string]int                 // shared cluster → identities listing it
	hostUsers map[string]set[model.Identity] // egress host → identities naming it
	extNames  map[model.NN]string            // ExternalName Service → its external name
	extByHost map[string]set[model.NN]       // external name → ExternalName Services

	dirtyObj set[model.NN]
	dirtyID  set[model.Identity]
}

func newEgressState() egressState {
	return egressState{
		accepted: accepted[*egressPolicy]{}, bySource: map[model.Identity]set[model.NN]{},
		out: map[model.Identity]*egressOut{}, users: map[string]int{},
		hostUsers: map[string]set[model.Identity]{}, extNames: map[model.NN]string{}, extByHost: map[string]set[model.NN]{},
		dirtyObj: set[model.NN]{}, dirtyID: set[model.Identity]{},
	}
}

// changed marks the Egress nn to be reviewed again.
func (s *egressState) changed(nn model.NN) { s.dirtyObj.add(nn) }

// passthrough reports whether MeshConfig's enableEgress is on.
func (e *Engine) passthrough() bool { return e.m.MeshConfig().GetTraffic().GetEnableEgress() }

// egressActive reports whether id's proxies exist in the compiled mesh:
// its group is compiled only then.
func (e *Engine) egressActive(id model.Identity) bool {
	return e.m.HasPods(id) && e.m.Meshed(id.Namespace) && e.m.HasServiceAccount(id)
}

// resolveEgress validates an Egress and resolves its matches against the
// accepted HTTPRouteGroups (libs/policy's ResolveEgress, the rules the
// webhook applies on the object alone).
func (e *Engine) resolveEgress(nn model.NN, obj *meshv1.Egress) (*egressPolicy, *Rejection) {
	pe, rej := policy.ResolveEgress(nn.Namespace, obj, routeLookup{&e.pol})
	if rej != nil {
		return nil, rej
	}
	p := &egressPolicy{hosts: pe.Hosts, ipRanges: pe.IPRanges, ports: pe.Ports}
	for _, s := range pe.Sources {
		p.sources = append(p.sources, model.Identity(s))
	}
	for _, m := range pe.HTTP {
		p.http = append(p.http, HTTPMatch(m))
	}
	return p, nil
}

// compileEgress reviews the dirty Egresses, follows the ExternalName
// Services that changed, and rebuilds the egress of the identities all
// that touched (and of those whose proxies came or went), marking their
// groups. It runs after the outbound and inbound steps, whose marks on
// groups it reads.
func (e *Engine) compileEgress(d *Delta) {
	s := &e.egress
	if e.dirty.all {
		for _, nn := range e.m.EgressNames() {
			s.changed(nn)
		}
		for nn := range s.accepted {
			s.changed(nn)
		}
		for _, id := range e.m.Identities() {
			s.dirtyID.add(id)
		}
		for id := range s.out {
			s.dirtyID.add(id)
		}
	}
	// An HTTPRouteGroup reviewed again may have changed what the Egresses
	// naming it allow.
	for hrg := range e.dirty.hrg {
		for _, nn := range e.m.EgressesNaming(hrg) {
			s.changed(nn)
		}
	}
	for _, nn := range multimap.Sorted(s.dirtyObj) {
		p, ok := review(&e.pol, d, layout.KindEgress, nn, e.m.Egress(nn), e.resolveEgress)
		if !ok {
			continue // rejected: its last accepted version stays
		}
		old, changed := s.accepted.set(nn, p, p != nil)
		if !changed {
			continue
		}
		for _, x := range []*egressPolicy{old, p} {
			if x == nil {
				continue
			}
			for _, src := range x.sources {
				s.dirtyID.add(src)
			}
		}
		if old != nil {
			for _, src := range old.sources {
				multimap.Remove(s.bySource, src, nn)
			}
		}
		if p != nil {
			for _, src := range p.sources {
				multimap.Add(s.bySource, src, nn)
			}
		}
	}
	for svc := range e.dirty.svc {
		e.externalNameChanged(svc)
	}
	// Identities whose proxies came or went since their egress was built.
	for id := range e.dirty.grp {
		if _, had := s.out[id]; had != (e.egressActive(id) && (e.passthrough() || len(s.bySource[id]) > 0)) {
			s.dirtyID.add(id)
		}
	}
	for _, id := range multimap.Sorted(s.dirtyID) {
		e.compileEgressOf(id, d)
	}
	s.dirtyObj, s.dirtyID = set[model.NN]{}, set[model.Identity]{}
}

// externalNameChanged follows an ExternalName Service: the identities
// whose egress names its old or new external name are rebuilt, since
// their virtual hosts and SNIs carry the Service's names.
func (e *Engine) externalNameChanged(svc model.NN) {
	s := &e.egress
	now := ""
	if e.m.Meshed(svc.Namespace) {
		now = model.ExternalName(e.m.Service(svc))
	}
	was := s.extNames[svc]
	if was == now {
		return
	}
	for _, h := range []string{was, now} {
		for id := range s.hostUsers[h] {
			s.dirtyID.add(id)
		}
	}
	if was != "" {
		multimap.Remove(s.extByHost, was, svc)
		delete(s.extNames, svc)
	}
	if now != "" {
		multimap.Add(s.extByHost, now, svc)
		s.extNames[svc] = now
	}
}

// compileEgressOf rebuilds the egress of id: its listeners and routes,
// its share of the shared clusters, and its group.
func (e *Engine) compileEgressOf(id model.Identity, d *Delta) {
	s := &e.egress
	e.dirty.group(id)
	old := s.out[id]
	var cur *egressOut
	switch {
	case !e.egressActive(id):
	case e.passthrough():
		cur = &egressOut{clusters: []string{PassthroughCluster}}
	case len(s.bySource[id]) > 0:
		var ps []*egressPolicy
		for _, nn := range multimap.Sorted(s.bySource[id]) {
			ps = append(ps, s.accepted[nn])
		}
		cur = e.buildEgress(id, planEgress(ps, e.externalNames(id)), d)
	}
	// Its own resources it no longer has.
	if old != nil {
		kept := map[resKey]bool{}
		if cur != nil {
			for _, k := range cur.keys {
				kept[k] = true
			}
		}
		for _, k := range old.keys {
			if !kept[k] {
				e.res.drop(k, d)
			}
		}
		for _, h := range old.hosts {
			multimap.Remove(s.hostUsers, h, id)
		}
	}
	// The shared clusters: counted per identity, built by the first user,
	// dropped with the last.
	var oldClusters, curClusters []string
	if old != nil {
		oldClusters = old.clusters
	}
	if cur != nil {
		curClusters = cur.clusters
		for _, h := range cur.hosts {
			multimap.Add(s.hostUsers, h, id)
		}
	}
	for _, c := range curClusters {
		if !slices.Contains(oldClusters, c) {
			if s.users[c]++; s.users[c] == 1 || e.res.get(resKey{layout.TypeCluster, c}) == nil {
				e.putEgressCluster(c, cur, d)
			}
		}
	}
	for _, c := range oldClusters {
		if !slices.Contains(curClusters, c) {
			if s.users[c]--; s.users[c] <= 0 {
				delete(s.users, c)
				e.res.drop(resKey{layout.TypeCluster, c}, d)
			}
		}
	}
	if cur == nil || len(cur.listeners)+len(cur.clusters) == 0 {
		delete(s.out, id)
		return
	}
	s.out[id] = cur
}

// putEgressCluster builds the shared cluster c for its first user.
func (e *Engine) putEgressCluster(c string, by *egressOut, d *Delta) {
	if c == PassthroughCluster {
		e.put(d, layout.TypeCluster, c)(buildPassthroughCluster())
		return
	}
	hp := by.dnsClusters[c]
	e.put(d, layout.TypeCluster, c)(buildEgressDNSCluster(c, hp.host, hp.port))
}

// externalNames are the names of the ExternalName Services, by external
// name, that id's clients may use for it: each Service's qualified names,
// and its bare name for clients in its own namespace.
func (e *Engine) externalNames(id model.Identity) func(host string) []string {
	return func(host string) []string {
		var out []string
		for _, svc := range multimap.Sorted(e.egress.extByHost[host]) {
			out = append(out, externalServiceNames(svc, id.Namespace == svc.Namespace)...)
		}
		return out
	}
}

// externalServiceNames are the DNS names of a Service, the bare name
// only for clients of its own namespace.
func externalServiceNames(svc model.NN, bare bool) []string {
	out := []string{
		svc.Name + "." + svc.Namespace,
		svc.Name + "." + svc.Namespace + ".svc",
		svc.Name + "." + svc.Namespace + ".svc.cluster",
		svc.Name + "." + svc.Namespace + ".svc.cluster.local",
	}
	if bare {
		out = append([]string{svc.Name}, out...)
	}
	return out
}

// egressNames are the names id's group lists for its egress, and whether
// it needs the OutboundListener for them.
func (e *Engine) egressNames(id model.Identity) (listeners, routes, clusters []string, outbound bool) {
	o := e.egress.out[id]
	if o == nil {
		return nil, nil, nil, false
	}
	return o.listeners, o.routes, o.clusters, true
}

// egressNeedsOutbound reports whether any proxy's egress goes through the
// OutboundListener.
func (e *Engine) egressNeedsOutbound() bool { return len(e.egress.out) > 0 }

// compileOutboundListener keeps the shared OutboundListener: it exists
// while any service does or any proxy has egress, and its default chain
// follows enableEgress.
func (e *Engine) compileOutboundListener(d *Delta) {
	k := resKey{layout.TypeListener, OutboundListener}
	switch {
	case e.svcs.count() == 0 && !e.egressNeedsOutbound():
		e.res.drop(k, d)
	case e.res.get(k) == nil || e.dirty.all:
		e.put(d, k.typ, k.name)(buildOutboundListener(e.passthrough()))
	}
}

// sortedKeys lists the keys of a set of strings, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
