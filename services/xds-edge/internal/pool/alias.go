package pool

import (
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// Aliases (meshv1.ProxyGroup.aliases): a group may be served, under a name
// its proxies ask for, the content of another stored resource, such as a
// source's retry copy of a route that a shared gRPC API listener names.
// Each (type, name, target) in use is one Resource, made once per commit
// that changes its target and shared by every group with that alias: its
// Name and delta name are the requested name, its bytes and version the
// target's, and its ID the requested name's with a revision of its own, so
// a stream that holds the shared content (or another alias's) sees new
// content and is pushed. A group that gains, moves or drops an alias, and
// one whose alias target changes, are reported in the commit's Change for
// that name only: the cost follows what changed, as for any resource.

// aliasKey is one alias in use: typeURL/name served as typeURL/target.
type aliasKey struct{ typeURL, name, target string }

// aliases indexes the aliases the applied groups use.
type aliases struct {
	res      map[aliasKey]*Resource           // the content served; absent while the target is
	users    map[aliasKey]map[string]struct{} // alias → ids of groups using it
	byTarget map[resKey]map[aliasKey]struct{} // target → aliases of it
	held     map[resKey]int                   // requested name → aliases in res under it
	fresh    map[aliasKey]struct{}            // aliases first used since the last commit
}

func newAliases() aliases {
	return aliases{
		res: map[aliasKey]*Resource{}, users: map[aliasKey]map[string]struct{}{},
		byTarget: map[resKey]map[aliasKey]struct{}{}, held: map[resKey]int{}, fresh: map[aliasKey]struct{}{},
	}
}

// use records that group id uses the aliases of byType.
func (a *aliases) use(id string, byType map[string]map[string]string) {
	for typeURL, m := range byType {
		for name, target := range m {
			k := aliasKey{typeURL, name, target}
			if a.users[k] == nil {
				a.fresh[k] = struct{}{}
				t := resKey{typeURL, target}
				if a.byTarget[t] == nil {
					a.byTarget[t] = map[aliasKey]struct{}{}
				}
				a.byTarget[t][k] = struct{}{}
			}
			addRef(a.users, k, id)
		}
	}
}

// unuse drops group id's use of the aliases of byType. An alias no group
// uses any more is dropped at the next rebuild.
func (a *aliases) unuse(id string, byType map[string]map[string]string) {
	for typeURL, m := range byType {
		for name, target := range m {
			k := aliasKey{typeURL, name, target}
			dropRef(a.users, k, id)
			if a.users[k] == nil {
				a.fresh[k] = struct{}{}
			}
		}
	}
}

// rebuildAliases remakes the content of the aliases first used or dropped
// since the last commit and of those whose target changed, and drops the
// aliases no group uses. Writer only.
func (p *Pool) rebuildAliases(changedRes map[resKey]struct{}) {
	todo := p.alias.fresh
	p.alias.fresh = map[aliasKey]struct{}{}
	for k := range changedRes {
		for ak := range p.alias.byTarget[k] {
			todo[ak] = struct{}{}
		}
	}
	for ak := range todo {
		p.rebuildAlias(ak)
	}
}

func (p *Pool) rebuildAlias(ak aliasKey) {
	name := resKey{ak.typeURL, ak.name}
	target := resKey{ak.typeURL, ak.target}
	src := p.res[target]
	prev := p.alias.res[ak]
	if prev != nil && src != nil && prev.Any == src.Any && p.alias.users[ak] != nil {
		return // the same content: what streams hold stays current
	}
	if prev != nil {
		delete(p.alias.res, ak)
		if p.alias.held[name]--; p.alias.held[name] <= 0 {
			delete(p.alias.held, name)
		}
	}
	if p.alias.users[ak] == nil {
		delete(p.alias.byTarget[target], ak)
		if len(p.alias.byTarget[target]) == 0 {
			delete(p.alias.byTarget, target)
		}
		if id, ok := p.ids.byKey[name]; ok && !p.holds(name) {
			p.ids.release(id, false)
		}
		return
	}
	if src == nil {
		if id, ok := p.ids.byKey[name]; ok && !p.holds(name) {
			p.ids.release(id, false)
		}
		return
	}
	id := p.ids.idOf(name)
	n := p.ids.slots[id].key.name
	p.alias.res[ak] = &Resource{
		TypeURL: ak.typeURL, Name: n, Version: src.Version, Hash: src.Hash, Epoch: src.Epoch, Generation: src.Generation,
		Any: src.Any, Delta: &discovery.Resource{Name: n, Version: src.Version, Resource: src.Any},
		ID: id, Rev: p.ids.nextRev(id),
	}
	p.alias.held[name]++
}

// resolve is the content group g is served under k: its alias's, or k's.
func (p *Pool) resolve(g *Group, k resKey) *Resource {
	if t, ok := g.Aliases[k.typeURL][k.name]; ok {
		return p.alias.res[aliasKey{k.typeURL, k.name, t}]
	}
	return p.res[k]
}

// holds reports whether the pool holds content under k, its own or an
// alias's, so that k's ID must stay.
func (p *Pool) holds(k resKey) bool { return p.res[k] != nil || p.alias.held[k] > 0 }
