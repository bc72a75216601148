package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/fnv"
	"iter"
	"maps"
	"slices"
	"sort"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

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

// MaxGroupBytes bounds the names a proxy group carries itself. NATS takes
// no value over bus.MaxValueSize (1 MB); an identity that may reach
// thousands of services in SMI mode has more names than that (about 100
// bytes for each service's cluster, endpoints and route), so the names of
// a group above this bound go into name sets of its own instead (see
// spillSetName), each within the bound, and the group lists them. The edge
// serves a group the names of its sets as its own, so nothing changes for
// the proxies, and no group is ever left out for being too large.
const MaxGroupBytes = bus.MaxValueSize / 2

// spillSetName is the name of identity id's i-th own name set. "/" cannot
// appear in a namespace or ServiceAccount name, so no two identities share
// one, and none is a permissive set's.
func spillSetName(id model.Identity, i int) string {
	return fmt.Sprintf("group/%s/%s/%02d", id.Namespace, id.Name, i)
}

// groups holds the compiled proxy groups, one per identity with running
// pods in a meshed namespace, and the name sets they share.
type groups struct {
	byID map[model.Identity]*Group
	sets map[string]*Set
	// spilled is how many name sets of its own each spilled group has.
	spilled map[model.Identity]int
	// grpc are the gRPC-flavour groups (Options.ProxylessGRPC).
	grpc map[model.Identity]*Group
	// grpcServers are the gRPC server listeners of each identity.
	grpcServers map[model.Identity][]string
	// grpcSpilled is how many name sets of its own each spilled gRPC
	// group has.
	grpcSpilled map[model.Identity]int
}

func newGroups() groups {
	return groups{byID: map[model.Identity]*Group{}, sets: map[string]*Set{}, spilled: map[model.Identity]int{},
		grpc: map[model.Identity]*Group{}, grpcServers: map[model.Identity][]string{}, grpcSpilled: map[model.Identity]int{}}
}

// namesSize is about the encoded size of names: each name with its tag and
// length bytes.
func namesSize(byType map[string][]string) int {
	n := 0
	for _, names := range byType {
		for _, name := range names {
			n += len(name) + 3
		}
	}
	return n
}

// spill puts the names of id's group into name sets of its own, each
// within MaxGroupBytes, drops the ones it no longer needs, and returns
// their names. n == 0 names (byType nil) drops them all.
func (g *groups) spill(id model.Identity, byType map[string][]string, d *Delta) []string {
	return g.spillAs(func(i int) string { return spillSetName(id, i) }, g.spilled, id, byType, d)
}

// spillAs is spill with the sets named by name and counted in spilled.
func (g *groups) spillAs(name func(int) string, spilled map[model.Identity]int, id model.Identity, byType map[string][]string, d *Delta) []string {
	var chunks []map[string][]string
	var cur map[string][]string
	size := 0
	for _, typ := range slices.Sorted(maps.Keys(byType)) {
		for _, name := range byType[typ] {
			if cur == nil || size+len(name)+3 > MaxGroupBytes {
				cur, size = map[string][]string{}, 0
				chunks = append(chunks, cur)
			}
			cur[typ] = append(cur[typ], name)
			size += len(name) + 3
		}
	}
	names := make([]string, len(chunks))
	for i, c := range chunks {
		names[i] = name(i)
		g.putSet(names[i], c, d)
	}
	for i := len(chunks); i < spilled[id]; i++ {
		g.dropSet(name(i), d)
	}
	if len(chunks) == 0 {
		delete(spilled, id)
	} else {
		spilled[id] = len(chunks)
	}
	return names
}

// get is the group of id, or nil.
func (g *groups) get(id model.Identity) *Group { return g.byID[id] }

// identities iterates over the identities that have a group, in no order.
func (g *groups) identities() iter.Seq[model.Identity] { return maps.Keys(g.byID) }

// put records a group and adds it to d when its version changed.
func (g *groups) put(grp *Group, d *Delta) {
	if old := g.byID[grp.Identity]; old != nil && old.Version == grp.Version {
		return
	}
	g.byID[grp.Identity] = grp
	d.Groups = append(d.Groups, grp)
}

// drop removes the group of id, adding its key to d.
func (g *groups) drop(id model.Identity, d *Delta) {
	if grp := g.byID[id]; grp != nil {
		delete(g.byID, id)
		d.DeletedGroups = append(d.DeletedGroups, grp.Key())
	}
}

// set is the name set called name, or nil.
func (g *groups) set(name string) *Set { return g.sets[name] }

// putSet records the name set called name (by short type; empty lists left
// out), or drops it when it has no names, and adds it to d when its
// content changed. It reports whether the set came or went, which changes
// the groups that list it.
func (g *groups) putSet(name string, byType map[string][]string, d *Delta) bool {
	ns := &meshv1.NameSet{Name: name, Resources: map[string]*meshv1.ResourceNames{}}
	for typ, names := range byType {
		if len(names) > 0 {
			ns.Resources[TypeURL(typ)] = &meshv1.ResourceNames{Names: names}
		}
	}
	if len(ns.Resources) == 0 {
		return g.dropSet(name, d)
	}
	s := &Set{Set: ns, Version: SetVersion(ns)}
	old := g.sets[name]
	if old != nil && old.Version == s.Version {
		return false
	}
	g.sets[name] = s
	d.Sets = append(d.Sets, s)
	return old == nil
}

// dropSet removes the name set called name, adding its key to d. It
// reports whether there was one.
func (g *groups) dropSet(name string, d *Delta) bool {
	s := g.sets[name]
	if s == nil {
		return false
	}
	delete(g.sets, name)
	d.DeletedSets = append(d.DeletedSets, s.Key())
	return true
}

// permissiveSets lists the names of the permissive name sets that exist.
func (g *groups) permissiveSets() []string { return g.existing(PermissiveSetName) }

// existing lists the names of the shards of a sharded name set that exist.
func (g *groups) existing(setName func(int) string) []string {
	var out []string
	for i := range PermissiveShards {
		if name := setName(i); g.sets[name] != nil {
			out = append(out, name)
		}
	}
	return out
}

// names lists the names of typeURL the proxies of id are served: the
// group's own and those of the sets it lists, sorted, without duplicates.
func (g *groups) names(id model.Identity, typeURL string) []string {
	return g.namesOf(g.byID[id], typeURL)
}

// namesOf lists the names of typeURL grp's proxies are served: its own
// and those of the sets it lists, sorted, without duplicates.
func (g *groups) namesOf(grp *Group, typeURL string) []string {
	if grp == nil {
		return nil
	}
	names := slices.Clone(grp.Group.GetResources()[typeURL].GetNames())
	for _, name := range grp.Group.GetSets() {
		if s := g.sets[name]; s != nil {
			names = append(names, s.Set.GetResources()[typeURL].GetNames()...)
		}
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// compileShared rebuilds what proxies share in permissive mode: the name
// sets of the services' outbound names (the OutboundListener is
// compileOutboundListener's).
func (e *Engine) compileShared(d *Delta) {
	if !e.m.Permissive() || e.svcs.count() == 0 {
		for i := range PermissiveShards {
			if e.groups.dropSet(PermissiveSetName(i), d) {
				e.markAllGroups()
			}
			if e.groups.dropSet(GRPCPermissiveSetName(i), d) {
				e.markAllGroups()
			}
		}
		return
	}
	all := e.svcs.every()
	for _, i := range slices.Sorted(maps.Keys(e.dirty.shards)) {
		var refs []svcRef
		for _, s := range all {
			if permissiveShard(s.nn) == i {
				refs = append(refs, s)
			}
		}
		n := e.names(refs)
		if e.groups.putSet(PermissiveSetName(i), map[string][]string{
			layout.TypeCluster:  n.clusters,
			layout.TypeEndpoint: n.endpoints,
			layout.TypeRoute:    n.routes,
			layout.TypeListener: n.listeners,
		}, d) {
			e.markAllGroups()
		}
		if e.opts.ProxylessGRPC {
			g := e.grpcNames(refs)
			if e.groups.putSet(GRPCPermissiveSetName(i), map[string][]string{
				layout.TypeCluster:  g.clusters,
				layout.TypeEndpoint: g.endpoints,
				layout.TypeRoute:    g.routes,
				layout.TypeListener: g.listeners,
			}, d) {
				e.markAllGroups()
			}
		}
	}
}

// markAllGroups marks every group dirty: a name set they may list came or
// went.
func (e *Engine) markAllGroups() {
	for id := range e.groups.identities() {
		e.dirty.group(id)
	}
}

// compileGroup rebuilds the proxy group of id from what it reaches and
// serves.
func (e *Engine) compileGroup(id model.Identity, d *Delta) {
	if !e.m.HasPods(id) || !e.m.Meshed(id.Namespace) || !e.m.HasServiceAccount(id) {
		e.groups.drop(id, d)
		e.groups.spill(id, nil, d)
		e.dropGRPCGroup(id, d)
		return
	}
	if e.opts.ProxylessGRPC {
		e.compileGRPCGroup(id, d)
	}
	var locals []string
	var clusters, endpoints, routes, listeners, sets []string
	if e.res.get(resKey{layout.TypeListener, InboundListenerName(id)}) != nil {
		listeners = append(listeners, InboundListenerName(id))
	}
	reach := e.reach.reached(id)
	egListeners, egRoutes, egClusters, egOutbound := e.egressNames(id)
	if (len(reach) > 0 || egOutbound) && e.res.get(resKey{layout.TypeListener, OutboundListener}) != nil {
		listeners = append(listeners, OutboundListener)
	}
	over := e.retries.overrides(id)
	switch {
	case len(reach) == 0:
	case e.m.Permissive() && len(over) == 0:
		sets = e.groups.permissiveSets()
	case e.m.Permissive():
		// Retry copies (retry.go): the shards that hold a retried
		// service's shared names are listed name by name, the copies in
		// place of the shared names; the other shards as their sets.
		var refs []svcRef
		sets, refs = e.retryShards(id, reach)
		n := e.names(refs)
		clusters, endpoints, routes = n.clusters, n.endpoints, withOverrides(n.routes, over)
		listeners = mergeSorted(listeners, withOverrides(n.listeners, over))
	default:
		n := e.names(reach)
		clusters, endpoints, routes = n.clusters, n.endpoints, withOverrides(n.routes, over)
		listeners = mergeSorted(listeners, withOverrides(n.listeners, over))
	}
	served := e.reach.served(id)
	servedRefs := make([]svcRef, 0, len(served))
	for _, s := range served {
		servedRefs = append(servedRefs, svcRef{s, e.svcs.frag(s).key})
	}
	sortRefs(servedRefs)
	for _, s := range servedRefs {
		locals = append(locals, e.svcs.frag(s.nn).locals...)
	}
	own := map[string][]string{
		layout.TypeCluster:  mergeSorted(mergeSorted(mergeSorted(clusters, locals), egClusters), e.tracingClusters()),
		layout.TypeEndpoint: endpoints,
		layout.TypeRoute:    mergeSorted(routes, egRoutes),
		layout.TypeListener: mergeSorted(listeners, egListeners),
	}
	if namesSize(own) > MaxGroupBytes {
		sets = append(slices.Clone(sets), e.groups.spill(id, own, d)...)
		own = nil
	} else {
		e.groups.spill(id, nil, d)
	}
	g := &meshv1.ProxyGroup{
		Identity:  &meshv1.Identity{Namespace: id.Namespace, ServiceAccount: id.Name},
		Resources: map[string]*meshv1.ResourceNames{},
		Sets:      sets,
	}
	for typ, names := range own {
		if len(names) > 0 {
			g.Resources[TypeURL(typ)] = &meshv1.ResourceNames{Names: names}
		}
	}
	e.groups.put(&Group{Identity: id, Group: g, Version: GroupVersion(g)}, d)
}

// GroupVersion is the content version of a proxy group: a hash of its
// identity, resource names and sets (the generation takes no part).
func GroupVersion(g *meshv1.ProxyGroup) string {
	h := sha256.New()
	h.Write([]byte(g.GetIdentity().GetNamespace() + "/" + g.GetIdentity().GetServiceAccount() + "\x00"))
	hashNames(h, g.GetResources())
	hashAliases(h, g.GetAliases()) // nothing without aliases
	if len(g.GetSets()) > 0 {
		// Only a group that lists sets hashes a sets section: the version
		// of a group without sets depends on its identity and names alone.
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
