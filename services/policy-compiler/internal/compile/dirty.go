package compile

import (
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

type set[K comparable] map[K]struct{}

func (s set[K]) add(k K) { s[k] = struct{}{} }

// dirtySet is what the next Compile rebuilds: what the changes applied
// since the last Compile touched, and what rebuilding one part finds that
// another part depends on. Compile empties it with reset.
type dirtySet struct {
	all    bool // recompile everything (MeshConfig change)
	allOut bool // a service changed in permissive mode: every identity's outbound config

	svc, ep             set[model.NN]       // services to rebuild; services whose endpoints changed
	out, in, grp        set[model.Identity] // identities whose reach, inbound listener, group to rebuild
	tt, hrg, tcp, split set[model.NN]       // policy objects to validate again
	shards              set[int]            // permissive name sets to rebuild
	grpcRoute           set[model.NN]       // services whose gRPC routes' matches to rebuild
	bare                set[string]         // bare gRPC target names whose claimants changed
	retry               set[model.NN]       // Retry objects to validate again
	retrySrc            set[model.Identity] // identities whose retry routes to rebuild (retry.go)
	headless            set[headlessPort]   // headless ports whose owned addresses moved (headless.go)
	review              set[model.NN]       // Services whose verdict to judge again

	// objs are the objects of model.ObjectKind kinds to validate again, by kind.
	objs map[string]set[model.NN]

	triggers map[string]int // observed changes, by kind
}

func newDirtySet() dirtySet {
	var s dirtySet
	s.reset()
	return s
}

// reset empties the set.
func (s *dirtySet) reset() {
	s.all, s.allOut = false, false
	s.svc, s.ep = set[model.NN]{}, set[model.NN]{}
	s.out, s.in, s.grp = set[model.Identity]{}, set[model.Identity]{}, set[model.Identity]{}
	s.tt, s.hrg, s.tcp, s.split = set[model.NN]{}, set[model.NN]{}, set[model.NN]{}, set[model.NN]{}
	s.shards = set[int]{}
	s.grpcRoute = set[model.NN]{}
	s.bare = set[string]{}
	s.retry, s.retrySrc = set[model.NN]{}, set[model.Identity]{}
	s.headless, s.review = set[headlessPort]{}, set[model.NN]{}
	s.objs = map[string]set[model.NN]{}
	s.triggers = map[string]int{}
}

// observed counts one observed change of kind.
func (s *dirtySet) observed(kind string) { s.triggers[kind]++ }

// pending reports whether changes were observed since the last reset.
func (s *dirtySet) pending() bool { return len(s.triggers) > 0 }

// everything marks the whole output dirty.
func (s *dirtySet) everything() { s.all = true }

// everyOutbound marks the outbound config of every identity dirty.
func (s *dirtySet) everyOutbound() { s.allOut = true }

// service marks every resource of a service dirty.
func (s *dirtySet) service(nn model.NN) { s.svc.add(nn) }

// endpoints marks the ClusterLoadAssignments of a service dirty.
func (s *dirtySet) endpoints(nn model.NN) { s.ep.add(nn) }

// outbound marks what an identity reaches dirty.
func (s *dirtySet) outbound(id model.Identity) { s.out.add(id) }

// inbound marks the inbound listener of an identity dirty.
func (s *dirtySet) inbound(id model.Identity) { s.in.add(id) }

// group marks the proxy group of an identity dirty.
func (s *dirtySet) group(id model.Identity) { s.grp.add(id) }

// proxy marks everything of an identity dirty: its reach, its inbound
// listener and its group.
func (s *dirtySet) proxy(id model.Identity) {
	s.out.add(id)
	s.in.add(id)
	s.grp.add(id)
}

// shard marks permissive name set i dirty.
func (s *dirtySet) shard(i int) { s.shards.add(i) }

// policy marks the policy object nn of the observed kind (layout.Kind...)
// to be validated again; other kinds are not policies and are ignored.
func (s *dirtySet) policy(kind string, nn model.NN) {
	switch kind {
	case layout.KindTrafficTarget:
		s.tt.add(nn)
	case layout.KindHTTPRouteGroup:
		s.hrg.add(nn)
	case layout.KindTCPRoute:
		s.tcp.add(nn)
	case layout.KindTrafficSplit:
		s.split.add(nn)
	case layout.KindRetry:
		s.retry.add(nn)
	default:
		if model.ObjectKind(kind) {
			if s.objs[kind] == nil {
				s.objs[kind] = set[model.NN]{}
			}
			s.objs[kind].add(nn)
		}
	}
}

// target marks what an accepted TrafficTarget (nil: none) shapes: the
// reach of its sources and the inbound listener of its destination.
func (s *dirtySet) target(t *Target) {
	if t == nil {
		return
	}
	for _, src := range t.Sources {
		s.out.add(src)
	}
	s.in.add(t.Dest)
}
