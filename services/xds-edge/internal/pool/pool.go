// Package pool is the xds-edge's view of KV mesh-compiled: one shared pool of
// compiled Envoy resources, each wrapped for the wire once, and the proxy
// groups that name them.
//
// Writes are staged as they arrive and applied together, atomically, only
// when a Generation record newer than the applied one commits them. A commit
// returns exactly which groups see which resource names change, so the
// server pushes only to the proxies concerned, and only what changed. A
// group's view holds only the resources the pool has: a name a group refers
// to before its resource arrives is left out rather than served dangling.
//
// The pool is pure (no I/O, no locking); its owner serialises access.
package pool

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Resource is one compiled resource, ready for the wire. It is shared by
// every stream that serves it and must not be modified.
type Resource struct {
	// TypeURL and Name identify the resource.
	TypeURL, Name string
	// Version is the resource's xDS version: "<generation>.<hash>", the
	// generation that brought this content and the compiler's content
	// hash. Every replica derives the same version from the same KV record,
	// and a delta proxy that reconnects with it tells the edge how new its
	// state is (see GenerationOfVersion).
	Version string
	// Hash is the compiler's content hash alone: equal hashes mean equal
	// bytes.
	Hash string
	// Generation is the generation that last wrote the resource.
	Generation uint64
	// Any wraps the serialised resource for state-of-the-world responses.
	Any *anypb.Any
	// Delta is the same bytes as a delta-xDS Resource.
	Delta *discovery.Resource
}

// Group is the applied configuration of one workload identity.
type Group struct {
	// ID is "namespace/serviceaccount".
	ID string
	// Names are the resource names by type URL, sorted.
	Names map[string][]string
	// Generation is the generation that last wrote the group.
	Generation uint64
}

// GroupID is the pool's key for the group of namespace/serviceAccount.
func GroupID(namespace, serviceAccount string) string { return namespace + "/" + serviceAccount }

// TypeChange is what changed for one group in one xDS type.
type TypeChange struct {
	// Updated are names now in the group's view whose content is new to it.
	Updated []string
	// Removed are names that left the group's view.
	Removed []string
}

// Change is the result of a commit.
type Change struct {
	// Generation is the number just applied.
	Generation uint64
	// CommitTime is when the compiler committed it.
	CommitTime time.Time
	// Groups maps each affected group to its changed types.
	Groups map[string]map[string]*TypeChange
	// Resources is the number of resources written or deleted.
	Resources int
	// Dangling is the number of (group, name) references touched by this
	// commit that name a resource the pool lacks; they are not served until
	// the resource arrives.
	Dangling int
}

type resKey struct{ typeURL, name string }

type staged struct {
	value  []byte // nil: delete
	parsed layout.Compiled
}

// Pool is the applied compiled state plus the writes staged for the next
// generation.
type Pool struct {
	gen        uint64
	commitTime time.Time
	res        map[resKey]*Resource
	groups     map[string]*Group
	refs       map[resKey]map[string]struct{} // resource → ids of groups naming it
	staged     map[string]staged
	order      []string // staged keys in arrival order
}

// New returns an empty pool at generation 0.
func New() *Pool {
	return &Pool{
		res:    map[resKey]*Resource{},
		groups: map[string]*Group{},
		refs:   map[resKey]map[string]struct{}{},
		staged: map[string]staged{},
	}
}

// Generation is the applied generation number and its commit time.
func (p *Pool) Generation() (uint64, time.Time) { return p.gen, p.commitTime }

// Staged is the number of keys waiting for the next generation.
func (p *Pool) Staged() int { return len(p.staged) }

// Stage records a write to a mesh-compiled key (a resource or a group; value
// nil means the key was deleted) for the next commit. The last write to a
// key wins. Keys it cannot parse are refused and change nothing.
func (p *Pool) Stage(key string, value []byte) error {
	if key == layout.GenerationKey {
		return fmt.Errorf("stage %s: the generation key commits, use Commit", key)
	}
	c, err := layout.ParseCompiled(key)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if value != nil {
		// Check now so that a bad value never blocks a commit.
		var m proto.Message = &meshv1.CompiledResource{}
		if c.Group {
			m = &meshv1.ProxyGroup{}
		}
		if err := proto.Unmarshal(value, m); err != nil {
			return fmt.Errorf("stage %s: %w", key, err)
		}
	}
	if _, ok := p.staged[key]; !ok {
		p.order = append(p.order, key)
	}
	p.staged[key] = staged{value: value, parsed: c}
	return nil
}

// Commit applies every staged write when g is newer than the applied
// generation, and returns what changed. An older or equal generation is
// ignored (nil, nil): the pool never goes back, and the staged writes wait
// for the next generation.
func (p *Pool) Commit(g *meshv1.Generation) (*Change, error) {
	if g.GetNumber() <= p.gen {
		return nil, nil
	}
	ch := &Change{Generation: g.GetNumber(), CommitTime: g.GetCommitTime().AsTime(), Groups: map[string]map[string]*TypeChange{}}
	changedRes := map[resKey]struct{}{}
	oldViews := map[string]map[string][]string{} // group → type → names in view before
	var errs []string
	for _, key := range p.order {
		s := p.staged[key]
		if s.parsed.Group {
			id := GroupID(s.parsed.Namespace, s.parsed.Name)
			if _, seen := oldViews[id]; !seen {
				oldViews[id] = p.viewNames(id)
			}
			if err := p.applyGroup(id, s.value); err != nil {
				errs = append(errs, err.Error())
			}
			continue
		}
		k, changed, err := p.applyResource(s.parsed.Type, s.parsed.Name, s.value)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if changed {
			changedRes[k] = struct{}{}
		}
	}
	ch.Resources = len(changedRes)
	p.staged, p.order = map[string]staged{}, nil
	p.gen, p.commitTime = ch.Generation, ch.CommitTime

	// Groups whose own record changed: diff their views per type. A resource
	// changed in the same commit counts as updated when the group keeps it.
	for id, before := range oldViews {
		after := p.viewNames(id)
		for _, typeURL := range unionKeys(before, after) {
			tc := diffNames(before[typeURL], after[typeURL])
			for _, n := range before[typeURL] {
				// Kept by the group but rewritten in this commit.
				if _, kept := slices.BinarySearch(after[typeURL], n); !kept {
					continue
				}
				if _, ok := changedRes[resKey{typeURL, n}]; ok {
					tc.Updated = append(tc.Updated, n)
				}
			}
			if len(tc.Updated)+len(tc.Removed) > 0 {
				sort.Strings(tc.Updated)
				ch.typeChange(id, typeURL).merge(tc)
			}
		}
	}
	// Groups that name a changed resource but whose record did not change.
	for k := range changedRes {
		for id := range p.refs[k] {
			if _, done := oldViews[id]; done {
				continue
			}
			tc := ch.typeChange(id, k.typeURL)
			if _, ok := p.res[k]; ok {
				tc.Updated = append(tc.Updated, k.name)
			} else {
				tc.Removed = append(tc.Removed, k.name)
			}
		}
	}
	for _, types := range ch.Groups {
		for _, tc := range types {
			sort.Strings(tc.Updated)
			sort.Strings(tc.Removed)
		}
	}
	// Dangling references, counted among what this commit touched only, so
	// the cost stays proportional to the change.
	for id := range oldViews {
		if g := p.groups[id]; g != nil {
			for typeURL, names := range g.Names {
				for _, n := range names {
					if _, ok := p.res[resKey{typeURL, n}]; !ok {
						ch.Dangling++
					}
				}
			}
		}
	}
	for k := range changedRes {
		if _, ok := p.res[k]; !ok {
			for id := range p.refs[k] {
				if _, counted := oldViews[id]; !counted {
					ch.Dangling++
				}
			}
		}
	}
	if len(errs) > 0 {
		return ch, fmt.Errorf("generation %d: %d bad keys: %s", ch.Generation, len(errs), strings.Join(errs, "; "))
	}
	return ch, nil
}

func (ch *Change) typeChange(id, typeURL string) *TypeChange {
	types := ch.Groups[id]
	if types == nil {
		types = map[string]*TypeChange{}
		ch.Groups[id] = types
	}
	tc := types[typeURL]
	if tc == nil {
		tc = &TypeChange{}
		types[typeURL] = tc
	}
	return tc
}

func (tc *TypeChange) merge(o TypeChange) {
	tc.Updated = append(tc.Updated, o.Updated...)
	tc.Removed = append(tc.Removed, o.Removed...)
}

// applyResource writes or deletes one resource and reports whether its
// content changed.
func (p *Pool) applyResource(typ, name string, value []byte) (resKey, bool, error) {
	typeURL, known := typeURLs[typ]
	if !known {
		return resKey{}, false, fmt.Errorf("resource %s/%s: unknown resource type %q", typ, name, typ)
	}
	k := resKey{typeURL, name}
	if value == nil {
		if _, ok := p.res[k]; !ok {
			return k, false, nil
		}
		delete(p.res, k)
		return k, true, nil
	}
	var cr meshv1.CompiledResource
	if err := proto.Unmarshal(value, &cr); err != nil {
		return resKey{}, false, fmt.Errorf("resource %s/%s: %w", typ, name, err)
	}
	if cr.GetName() != name || cr.GetTypeUrl() != typeURL || cr.GetVersion() == "" {
		return resKey{}, false, fmt.Errorf("resource %s/%s: record names %q of type %q version %q", typ, name, cr.GetName(), cr.GetTypeUrl(), cr.GetVersion())
	}
	if old := p.res[k]; old != nil && old.Hash == cr.GetVersion() {
		// Same bytes: the version (and what proxies hold) stays.
		old.Generation = cr.GetGeneration()
		return k, false, nil
	}
	a := &anypb.Any{TypeUrl: cr.GetTypeUrl(), Value: cr.GetResource()}
	version := strconv.FormatUint(cr.GetGeneration(), 10) + "." + cr.GetVersion()
	p.res[k] = &Resource{
		TypeURL: k.typeURL, Name: name, Version: version, Hash: cr.GetVersion(), Generation: cr.GetGeneration(), Any: a,
		Delta: &discovery.Resource{Name: name, Version: version, Resource: a},
	}
	return k, true, nil
}

// typeURLs maps the short resource types of mesh-compiled keys to xDS type
// URLs.
var typeURLs = map[string]string{
	layout.TypeCluster:  "type.googleapis.com/envoy.config.cluster.v3.Cluster",
	layout.TypeEndpoint: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	layout.TypeListener: "type.googleapis.com/envoy.config.listener.v3.Listener",
	layout.TypeRoute:    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	layout.TypeSecret:   "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}

func (p *Pool) applyGroup(id string, value []byte) error {
	old := p.groups[id]
	if old != nil {
		for typeURL, names := range old.Names {
			for _, n := range names {
				k := resKey{typeURL, n}
				delete(p.refs[k], id)
				if len(p.refs[k]) == 0 {
					delete(p.refs, k)
				}
			}
		}
		delete(p.groups, id)
	}
	if value == nil {
		return nil
	}
	var pg meshv1.ProxyGroup
	if err := proto.Unmarshal(value, &pg); err != nil {
		return fmt.Errorf("group %s: %w", id, err)
	}
	g := &Group{ID: id, Names: map[string][]string{}, Generation: pg.GetGeneration()}
	for typeURL, rn := range pg.GetResources() {
		names := slices.Clone(rn.GetNames())
		sort.Strings(names)
		names = slices.Compact(names)
		if len(names) == 0 {
			continue
		}
		g.Names[typeURL] = names
		for _, n := range names {
			k := resKey{typeURL, n}
			if p.refs[k] == nil {
				p.refs[k] = map[string]struct{}{}
			}
			p.refs[k][id] = struct{}{}
		}
	}
	p.groups[id] = g
	return nil
}

// viewNames returns the names in a group's view (named and present) by type.
func (p *Pool) viewNames(id string) map[string][]string {
	g := p.groups[id]
	if g == nil {
		return map[string][]string{}
	}
	out := make(map[string][]string, len(g.Names))
	for typeURL, names := range g.Names {
		var in []string
		for _, n := range names {
			if _, ok := p.res[resKey{typeURL, n}]; ok {
				in = append(in, n)
			}
		}
		if len(in) > 0 {
			out[typeURL] = in
		}
	}
	return out
}

func unionKeys(a, b map[string][]string) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// diffNames compares two sorted name lists.
func diffNames(before, after []string) TypeChange {
	var tc TypeChange
	for _, n := range after {
		if _, found := slices.BinarySearch(before, n); !found {
			tc.Updated = append(tc.Updated, n)
		}
	}
	for _, n := range before {
		if _, found := slices.BinarySearch(after, n); !found {
			tc.Removed = append(tc.Removed, n)
		}
	}
	return tc
}

// HasGroup reports whether the group exists.
func (p *Pool) HasGroup(id string) bool { return p.groups[id] != nil }

// Names returns the names of typeURL in the group's view: named by the
// group and held by the pool, sorted.
func (p *Pool) Names(id, typeURL string) []string {
	g := p.groups[id]
	if g == nil {
		return nil
	}
	var out []string
	for _, n := range g.Names[typeURL] {
		if _, ok := p.res[resKey{typeURL, n}]; ok {
			out = append(out, n)
		}
	}
	return out
}

// Get returns the resource typeURL/name if the group's view holds it: a
// group never gets a resource it does not name, nor one the pool lacks.
func (p *Pool) Get(id, typeURL, name string) *Resource {
	g := p.groups[id]
	if g == nil {
		return nil
	}
	if _, found := slices.BinarySearch(g.Names[typeURL], name); !found {
		return nil
	}
	return p.res[resKey{typeURL, name}]
}

// View returns the group's resources of typeURL, sorted by name. When
// subscribed is non-nil only those names are returned.
func (p *Pool) View(id, typeURL string, subscribed map[string]struct{}) []*Resource {
	g := p.groups[id]
	if g == nil {
		return nil
	}
	var out []*Resource
	for _, n := range g.Names[typeURL] {
		if subscribed != nil {
			if _, ok := subscribed[n]; !ok {
				continue
			}
		}
		if r := p.res[resKey{typeURL, n}]; r != nil {
			out = append(out, r)
		}
	}
	return out
}

// VersionOf is the state-of-the-world version_info of a set of resources:
// "<generation>.<hash>", where generation is the newest generation that
// wrote any of them and hash covers their names and versions. Replicas
// holding the same state compute the same version, and the generation
// prefix lets a replica tell that a proxy has seen newer state than it has.
func VersionOf(rs []*Resource, extra ...string) string {
	h := sha256.New()
	var gen uint64
	for _, r := range rs {
		gen = max(gen, r.Generation)
		h.Write([]byte(r.Name))
		h.Write([]byte{0})
		h.Write([]byte(r.Version))
		h.Write([]byte{0})
	}
	for _, e := range extra {
		h.Write([]byte(e))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(gen, 10) + "." + hex.EncodeToString(h.Sum(nil)[:8])
}

// GenerationOfVersion returns the generation prefix of a version made by
// VersionOf, or of a resource's Version, or 0 for any other string.
func GenerationOfVersion(v string) uint64 {
	i := strings.IndexByte(v, '.')
	if i <= 0 {
		return 0
	}
	n, err := strconv.ParseUint(v[:i], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
