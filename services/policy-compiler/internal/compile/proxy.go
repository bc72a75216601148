package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/fnv"
	"maps"
	"slices"
	"sort"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// svcRef is a reached service and its ordering key.
type svcRef struct {
	nn  model.NN
	key string
}

func sortRefs(refs []svcRef) {
	sort.Slice(refs, func(i, j int) bool { return refs[i].key < refs[j].key })
}

// everyService lists every compiled service, by key.
func (e *Engine) everyService() []svcRef {
	if e.allSvcs == nil {
		e.allSvcs = make([]svcRef, 0, len(e.svcFrags))
		for s, f := range e.svcFrags {
			e.allSvcs = append(e.allSvcs, svcRef{s, f.key})
		}
		sortRefs(e.allSvcs)
	}
	return e.allSvcs
}

// reachable lists the compiled services id may reach, by key.
func (e *Engine) reachable(id model.Identity) []svcRef {
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		return nil
	}
	if e.m.Permissive() {
		return e.everyService()
	}
	out := set[model.NN]{}
	for dest := range e.srcDests[id] {
		for _, s := range e.m.IdentityServices(dest) {
			if _, ok := e.svcFrags[s]; ok {
				out.add(s)
			}
		}
	}
	// An apex is reachable through any reachable backend, and reaching an
	// apex brings the clusters of all its backends.
	for s := range out {
		for apex := range e.backendApex[s] {
			if _, ok := e.svcFrags[apex]; ok {
				out.add(apex)
			}
		}
	}
	for s := range out {
		for _, name := range e.m.SplitsForApex(s) {
			if sp := e.goodSplit[name]; sp != nil {
				for _, b := range sp.Backends {
					if _, ok := e.svcFrags[b.Service]; ok {
						out.add(b.Service)
					}
				}
			}
		}
	}
	refs := make([]svcRef, 0, len(out))
	for s := range out {
		refs = append(refs, svcRef{s, e.svcFrags[s].key})
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
		f := e.svcFrags[s.nn]
		n.clusters = append(n.clusters, f.clusters...)
		n.endpoints = append(n.endpoints, f.endpoints...)
		n.routes = append(n.routes, f.routes...)
		n.listeners = append(n.listeners, f.listeners...)
	}
	return n
}

// PermissiveShards is the number of name sets the permissive-mode names
// are spread over.
//
// In permissive mode every identity reaches every service, so every group
// would list the outbound names of every service, and adding one service
// would rewrite every group (at 1000 services and 2000 proxies, about 1000
// groups of 3000+ names each). Instead those names live in name sets that
// every group lists: a service change rewrites one set, and the groups stay
// as they are. The names are sharded by a hash of the service so that one
// set stays small (10,000 services are about 1 MB of names: one set would
// not fit a NATS message, and each change would rewrite all of it), and a
// change rewrites a sixteenth of them (~70 KB at 10,000 services).
//
// SMI mode has no sets: there an identity's outbound names are those of
// the services its TrafficTargets allow, which differ from identity to
// identity, and a service change already touches only the groups of the
// identities that may reach it. A set per service would shorten the groups
// but not spare any group write when access changes, and would add a key
// per service and a lookup per name at the edge.
const PermissiveShards = 16

// PermissiveSetName is the name of permissive name set shard i.
func PermissiveSetName(i int) string { return fmt.Sprintf("permissive-%02d", i) }

// permissiveShard is the permissive name set that holds svc's names.
func permissiveShard(svc model.NN) int {
	h := fnv.New32a()
	h.Write([]byte(svcKey(svc)))
	return int(h.Sum32() % PermissiveShards)
}

// compileShared rebuilds what proxies share: the OutboundListener, which
// exists while any service does, and in permissive mode the name sets of
// the services' outbound names.
func (e *Engine) compileShared(d *Delta) {
	k := resKey{layout.TypeListener, OutboundListener}
	switch {
	case len(e.svcFrags) == 0:
		e.drop(k, d)
	case e.res[k] == nil:
		e.put(d, k.typ, k.name)(buildOutboundListener())
	}
	if !e.m.Permissive() || len(e.svcFrags) == 0 {
		for i := range PermissiveShards {
			e.dropSet(PermissiveSetName(i), d)
		}
		e.dirtyShards = set[int]{}
		return
	}
	all := e.everyService()
	for _, i := range slices.Sorted(maps.Keys(e.dirtyShards)) {
		var refs []svcRef
		for _, s := range all {
			if permissiveShard(s.nn) == i {
				refs = append(refs, s)
			}
		}
		n := e.names(refs)
		e.putSet(PermissiveSetName(i), map[string][]string{
			layout.TypeCluster:  n.clusters,
			layout.TypeEndpoint: n.endpoints,
			layout.TypeRoute:    n.routes,
			layout.TypeListener: n.listeners,
		}, d)
	}
	e.dirtyShards = set[int]{}
}

// putSet records the name set called name (by short type; empty lists left
// out), or drops it when it has no names, and adds it to the delta when its
// content changed. A set appearing or disappearing changes the groups that
// list it: they are marked dirty.
func (e *Engine) putSet(name string, byType map[string][]string, d *Delta) {
	ns := &meshv1.NameSet{Name: name, Resources: map[string]*meshv1.ResourceNames{}}
	for typ, names := range byType {
		if len(names) > 0 {
			ns.Resources[TypeURL(typ)] = &meshv1.ResourceNames{Names: names}
		}
	}
	if len(ns.Resources) == 0 {
		e.dropSet(name, d)
		return
	}
	s := &Set{Set: ns, Version: SetVersion(ns)}
	old := e.sets[name]
	if old != nil && old.Version == s.Version {
		return
	}
	if old == nil {
		e.markAllGroups()
	}
	e.sets[name] = s
	d.Sets = append(d.Sets, s)
}

func (e *Engine) dropSet(name string, d *Delta) {
	if s := e.sets[name]; s != nil {
		delete(e.sets, name)
		d.DeletedSets = append(d.DeletedSets, s.Key())
		e.markAllGroups()
	}
}

// markAllGroups marks every group dirty: a name set they may list came or
// went.
func (e *Engine) markAllGroups() {
	for id := range e.groups {
		e.dirtyGroup.add(id)
	}
}

// permissiveSets lists the names of the permissive name sets that exist.
func (e *Engine) permissiveSets() []string {
	var out []string
	for i := range PermissiveShards {
		if name := PermissiveSetName(i); e.sets[name] != nil {
			out = append(out, name)
		}
	}
	return out
}

// compileOutbound recomputes what id reaches. Its outbound configuration
// is then only names in its group: the shared OutboundListener and the
// reached services' own resources.
func (e *Engine) compileOutbound(id model.Identity) {
	reach := e.reachable(id)
	// The reachers index serves SMI mode only: in permissive mode every
	// identity reaches every service, and markClients marks them all.
	var old []svcRef
	if e.indexed[id] {
		old = e.reach[id]
	}
	if e.m.Permissive() {
		e.updateReachers(id, old, nil)
		delete(e.indexed, id)
	} else {
		e.updateReachers(id, old, reach)
		e.indexed[id] = true
	}
	if len(reach) == 0 {
		delete(e.reach, id)
	} else {
		e.reach[id] = reach
	}
	e.dirtyGroup.add(id)
}

// updateReachers moves id's entries in the reachers index from the old
// reach to the new one, touching only the services that differ.
func (e *Engine) updateReachers(id model.Identity, old, cur []svcRef) {
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(old) && old[i].key < cur[j].key):
			multimap.Remove(e.reachers, old[i].nn, id)
			i++
		case i == len(old) || cur[j].key < old[i].key:
			multimap.Add(e.reachers, cur[j].nn, id)
			j++
		default:
			i++
			j++
		}
	}
}

func (e *Engine) compileInbound(id model.Identity, d *Delta) {
	for _, s := range e.inSvcs[id] {
		multimap.Remove(e.inBackers, s, id)
	}
	delete(e.inSvcs, id)
	e.dirtyGroup.add(id)
	k := resKey{layout.TypeListener, InboundListenerName(id)}
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		e.drop(k, d)
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
		sps, ok := e.svcPorts[s]
		if !ok {
			continue
		}
		svcs = append(svcs, s)
		multimap.Add(e.inBackers, s, id)
		for _, sp := range sps {
			if seen[sp.targetPort] {
				continue
			}
			seen[sp.targetPort] = true
			ports = append(ports, inboundPort{targetPort: sp.targetPort, protocol: sp.protocol, local: LocalClusterName(s, sp.port)})
		}
	}
	e.inSvcs[id] = svcs
	if len(ports) == 0 {
		e.drop(k, d)
		return
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].targetPort < ports[j].targetPort })
	var targets []namedTarget
	for _, nn := range sortedNN(e.destTTs[id]) {
		targets = append(targets, namedTarget{name: nn.String(), t: e.goodTT[nn]})
	}
	e.put(d, k.typ, k.name)(buildInboundListener(id, ports, targets, e.m.Permissive(), e.trustDomain()))
}

func (e *Engine) compileGroup(id model.Identity, d *Delta) {
	key := layout.GroupKey(id.Namespace, id.Name)
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) {
		if _, ok := e.groups[id]; ok {
			delete(e.groups, id)
			d.DeletedGroups = append(d.DeletedGroups, key)
		}
		return
	}
	var locals []string
	var clusters, endpoints, routes, listeners, sets []string
	if e.res[resKey{layout.TypeListener, InboundListenerName(id)}] != nil {
		listeners = append(listeners, InboundListenerName(id))
	}
	if len(e.reach[id]) > 0 && e.res[resKey{layout.TypeListener, OutboundListener}] != nil {
		listeners = append(listeners, OutboundListener)
	}
	switch {
	case len(e.reach[id]) == 0:
	case e.m.Permissive():
		sets = e.permissiveSets()
	default:
		n := e.names(e.reach[id])
		clusters, endpoints, routes = n.clusters, n.endpoints, n.routes
		listeners = mergeSorted(listeners, n.listeners)
	}
	own := make([]svcRef, 0, len(e.inSvcs[id]))
	for _, s := range e.inSvcs[id] {
		own = append(own, svcRef{s, e.svcFrags[s].key})
	}
	sortRefs(own)
	for _, s := range own {
		locals = append(locals, e.svcFrags[s.nn].locals...)
	}
	g := &meshv1.ProxyGroup{
		Identity:  &meshv1.Identity{Namespace: id.Namespace, ServiceAccount: id.Name},
		Resources: map[string]*meshv1.ResourceNames{},
		Sets:      sets,
	}
	for typ, names := range map[string][]string{
		layout.TypeCluster:  mergeSorted(clusters, locals),
		layout.TypeEndpoint: endpoints,
		layout.TypeRoute:    routes,
		layout.TypeListener: listeners,
	} {
		if len(names) > 0 {
			g.Resources[TypeURL(typ)] = &meshv1.ResourceNames{Names: names}
		}
	}
	grp := &Group{Identity: id, Group: g, Version: GroupVersion(g)}
	if old := e.groups[id]; old != nil && old.Version == grp.Version {
		return
	}
	e.groups[id] = grp
	d.Groups = append(d.Groups, grp)
}

// isApex reports whether svc is the apex of an accepted TrafficSplit.
func (e *Engine) isApex(svc model.NN) bool {
	for _, name := range e.m.SplitsForApex(svc) {
		if e.goodSplit[name] != nil {
			return true
		}
	}
	return false
}

// GroupVersion is the content version of a proxy group: a hash of its
// identity, resource names and sets (the generation takes no part).
func GroupVersion(g *meshv1.ProxyGroup) string {
	h := sha256.New()
	h.Write([]byte(g.GetIdentity().GetNamespace() + "/" + g.GetIdentity().GetServiceAccount() + "\x00"))
	hashNames(h, g.GetResources())
	if len(g.GetSets()) > 0 {
		// Only groups that list sets hash them, so the version of a group
		// without sets is what it was before sets existed.
		h.Write([]byte("sets\x00"))
		for _, s := range g.GetSets() {
			h.Write([]byte(s + "\x00"))
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// SetVersion is the content version of a name set: a hash of its name and
// resource names (the generation takes no part).
func SetVersion(s *meshv1.NameSet) string {
	h := sha256.New()
	h.Write([]byte("set:" + s.GetName() + "\x00"))
	hashNames(h, s.GetResources())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// hashNames hashes resource names by type URL, in a fixed order.
func hashNames(h hash.Hash, byType map[string]*meshv1.ResourceNames) {
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	sort.Strings(types)
	var buf []byte
	for _, t := range types {
		buf = append(buf[:0], t...)
		buf = append(buf, 0)
		for _, n := range byType[t].GetNames() {
			buf = append(buf, n...)
			buf = append(buf, 0)
		}
		buf = append(buf, 0)
		h.Write(buf)
	}
}

// mergeSorted merges two sorted lists of distinct names.
func mergeSorted(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
