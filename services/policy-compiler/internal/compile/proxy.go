package compile

import (
	"sort"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// reachIndex holds, per identity, the compiled services its proxies reach
// and those they serve, with the reverse indexes from a service to those
// identities.
type reachIndex struct {
	reach    map[model.Identity][]svcRef      // identity → services it reaches
	reachers map[model.NN]set[model.Identity] // service → identities reaching it (SMI mode)
	indexed  map[model.Identity]bool          // reach[id] is in reachers
	serves   map[model.Identity][]model.NN    // identity → services it serves
	backers  map[model.NN]set[model.Identity] // service → identities serving it
}

func newReachIndex() reachIndex {
	return reachIndex{
		reach:    map[model.Identity][]svcRef{},
		reachers: map[model.NN]set[model.Identity]{},
		indexed:  map[model.Identity]bool{},
		serves:   map[model.Identity][]model.NN{},
		backers:  map[model.NN]set[model.Identity]{},
	}
}

// reached lists the services id reached at its last compile, by key.
func (r *reachIndex) reached(id model.Identity) []svcRef { return r.reach[id] }

// reachersOf are the identities that reached nn at their last compile (SMI
// mode only).
func (r *reachIndex) reachersOf(nn model.NN) set[model.Identity] { return r.reachers[nn] }

// served lists the services id served at its last compile.
func (r *reachIndex) served(id model.Identity) []model.NN { return r.serves[id] }

// backersOf are the identities that served nn at their last compile.
func (r *reachIndex) backersOf(nn model.NN) set[model.Identity] { return r.backers[nn] }

// setReach records what id reaches. index puts it in the reachers index:
// in permissive mode every identity reaches every service, so the index is
// left out there.
func (r *reachIndex) setReach(id model.Identity, reach []svcRef, index bool) {
	var old []svcRef
	if r.indexed[id] {
		old = r.reach[id]
	}
	if index {
		r.updateReachers(id, old, reach)
		r.indexed[id] = true
	} else {
		r.updateReachers(id, old, nil)
		delete(r.indexed, id)
	}
	if len(reach) == 0 {
		delete(r.reach, id)
	} else {
		r.reach[id] = reach
	}
}

// updateReachers moves id's entries in the reachers index from the old
// reach to the new one, touching only the services that differ.
func (r *reachIndex) updateReachers(id model.Identity, old, cur []svcRef) {
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(old) && old[i].key < cur[j].key):
			multimap.Remove(r.reachers, old[i].nn, id)
			i++
		case i == len(old) || cur[j].key < old[i].key:
			multimap.Add(r.reachers, cur[j].nn, id)
			j++
		default:
			i++
			j++
		}
	}
}

// clearServed forgets what id serves.
func (r *reachIndex) clearServed(id model.Identity) {
	for _, s := range r.serves[id] {
		multimap.Remove(r.backers, s, id)
	}
	delete(r.serves, id)
}

// setServed records the services id serves.
func (r *reachIndex) setServed(id model.Identity, svcs []model.NN) {
	for _, s := range svcs {
		multimap.Add(r.backers, s, id)
	}
	r.serves[id] = svcs
}

// reachable lists the compiled services id may reach, by key.
func (e *Engine) reachable(id model.Identity) []svcRef {
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		return nil
	}
	if e.m.Permissive() {
		return e.svcs.every()
	}
	out := set[model.NN]{}
	for dest := range e.pol.destinationsOf(id) {
		for _, s := range e.m.IdentityServices(dest) {
			if e.svcs.has(s) {
				out.add(s)
			}
		}
	}
	// An apex is reachable through any reachable backend, and reaching an
	// apex brings the clusters of all its backends.
	for s := range out {
		for apex := range e.pol.apexesOf(s) {
			if e.svcs.has(apex) {
				out.add(apex)
			}
		}
	}
	for s := range out {
		for _, name := range e.m.SplitsForApex(s) {
			if sp := e.pol.split(name); sp != nil {
				for _, b := range sp.Backends {
					if e.svcs.has(b.Service) {
						out.add(b.Service)
					}
				}
			}
		}
	}
	refs := make([]svcRef, 0, len(out))
	for s := range out {
		refs = append(refs, svcRef{s, e.svcs.frag(s).key})
	}
	sortRefs(refs)
	return refs
}

// reachNames are the names of the clusters, endpoints, routes and
// listeners of the services an identity reaches, each sorted.
type reachNames struct {
	clusters, endpoints, routes, listeners []string
}

// names collects the names of the services in refs, in order.
func (e *Engine) names(refs []svcRef) *reachNames {
	n := &reachNames{}
	for _, s := range refs {
		f := e.svcs.frag(s.nn)
		n.clusters = append(n.clusters, f.clusters...)
		n.endpoints = append(n.endpoints, f.endpoints...)
		n.routes = append(n.routes, f.routes...)
		n.listeners = append(n.listeners, f.listeners...)
	}
	return n
}

// compileOutbound recomputes what id reaches. Its outbound configuration
// is then only names in its group: the shared OutboundListener and the
// reached services' own resources.
func (e *Engine) compileOutbound(id model.Identity) {
	// The reachers index serves SMI mode only: in permissive mode every
	// identity reaches every service, and markClients marks them all.
	e.reach.setReach(id, e.reachable(id), !e.m.Permissive())
	e.dirty.group(id)
	if len(e.pol.retries.bySource[id]) > 0 || e.retries.byID[id] != nil {
		e.dirty.retrySrc.add(id) // its retry routes follow what it reaches
	}
}

// compileInbound rebuilds the inbound listener of id from the services it
// serves and the accepted TrafficTargets naming it.
func (e *Engine) compileInbound(id model.Identity, d *Delta) {
	e.reach.clearServed(id)
	e.dirty.group(id)
	k := resKey{layout.TypeListener, InboundListenerName(id)}
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		e.res.drop(k, d)
		e.dropGRPCServers(id, d)
		return
	}
	var svcs []model.NN
	var ports []inboundPort
	seen := map[int32]bool{}
	// Apexes last: a chain forwards to the local cluster of the first
	// service on its port, and the backend's own service reads better.
	ordered := e.m.IdentityServices(id)
	sort.SliceStable(ordered, func(i, j int) bool { return !e.isApex(ordered[i]) && e.isApex(ordered[j]) })
	for _, s := range ordered {
		sps := e.svcs.ports(s)
		if sps == nil {
			continue
		}
		svcs = append(svcs, s)
		for _, sp := range sps {
			if seen[sp.targetPort] {
				continue
			}
			seen[sp.targetPort] = true
			ports = append(ports, inboundPort{targetPort: sp.targetPort, protocol: sp.protocol, local: LocalClusterName(s, sp.port), up: e.ups.forService(s)})
		}
	}
	e.reach.setServed(id, svcs)
	if e.opts.ProxylessGRPC {
		defer e.compileGRPCServers(id, d)
	}
	if len(ports) == 0 {
		e.res.drop(k, d)
		return
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].targetPort < ports[j].targetPort })
	var targets []namedTarget
	for _, nn := range multimap.Sorted(e.pol.targetsOf(id)) {
		targets = append(targets, namedTarget{name: nn.String(), t: e.pol.target(nn)})
	}
	e.put(d, k.typ, k.name)(buildInboundListener(id, ports, targets, e.m.Permissive(), e.trustDomain(), e.tlsParams(), e.tracing, e.ingressChains(svcs)...))
}

// isApex reports whether svc is the apex of an accepted TrafficSplit.
func (e *Engine) isApex(svc model.NN) bool {
	for _, name := range e.m.SplitsForApex(svc) {
		if e.pol.split(name) != nil {
			return true
		}
	}
	return false
}
