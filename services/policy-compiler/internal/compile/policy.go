package compile

import (
	"encoding/json"
	"reflect"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

type policyKey struct {
	kind string
	nn   model.NN
}

// accepted holds the last accepted version of each object of one policy
// kind.
type accepted[V any] map[model.NN]V

// set replaces the accepted version of nn with v, or removes it when the
// object is not present. It returns the version it replaced and whether
// the accepted version changed.
func (a accepted[V]) set(nn model.NN, v V, present bool) (old V, changed bool) {
	old, had := a[nn]
	if had == present && reflect.DeepEqual(old, v) {
		return old, false
	}
	if present {
		a[nn] = v
	} else {
		delete(a, nn)
	}
	return old, true
}

// policies holds the last accepted version of each policy object, the
// latest verdict on each, and the indexes that the accepted TrafficTargets
// and TrafficSplits induce. A rejected object keeps its last accepted
// version.
type policies struct {
	hrg      accepted[map[string]HTTPMatch]
	tcp      accepted[TCPMatch]
	targets  accepted[*Target]
	splits   accepted[*Split]
	retries  acceptedRetries
	verdicts map[policyKey]*meshv1.PolicyStatus
	// seeds are kept versions given by Seed, not yet reviewed (kept.go).
	seeds map[policyKey][]byte
	// reviewed are the objects reviewed since the last recordKept.
	reviewed set[policyKey]
	// kept are the kept versions last reported (Delta.Kept).
	kept map[policyKey]*Kept

	destTargets map[model.Identity]set[model.NN]          // destination → its TrafficTargets
	srcDests    map[model.Identity]map[model.Identity]int // source → destinations it may reach
	destSrcs    map[model.Identity]map[model.Identity]int // destination → allowed sources
	backendApex map[model.NN]set[model.NN]                // split backend → apexes
}

func newPolicies() policies {
	return policies{
		hrg:         accepted[map[string]HTTPMatch]{},
		tcp:         accepted[TCPMatch]{},
		targets:     accepted[*Target]{},
		splits:      accepted[*Split]{},
		retries:     newAcceptedRetries(),
		verdicts:    map[policyKey]*meshv1.PolicyStatus{},
		seeds:       map[policyKey][]byte{},
		reviewed:    set[policyKey]{},
		kept:        map[policyKey]*Kept{},
		destTargets: map[model.Identity]set[model.NN]{},
		srcDests:    map[model.Identity]map[model.Identity]int{},
		destSrcs:    map[model.Identity]map[model.Identity]int{},
		backendApex: map[model.NN]set[model.NN]{},
	}
}

var _ RouteLookup = (*policies)(nil)

// HTTPRouteGroup returns the last accepted matches of a group.
func (p *policies) HTTPRouteGroup(nn model.NN) (map[string]HTTPMatch, bool) {
	m, ok := p.hrg[nn]
	return m, ok
}

// TCPRoute returns the last accepted match of a TCPRoute.
func (p *policies) TCPRoute(nn model.NN) (TCPMatch, bool) {
	m, ok := p.tcp[nn]
	return m, ok
}

// target is the accepted version of a TrafficTarget, or nil.
func (p *policies) target(nn model.NN) *Target { return p.targets[nn] }

// split is the accepted version of a TrafficSplit, or nil.
func (p *policies) split(nn model.NN) *Split { return p.splits[nn] }

// targetsOf are the accepted TrafficTargets whose destination is dest.
func (p *policies) targetsOf(dest model.Identity) set[model.NN] { return p.destTargets[dest] }

// sourcesOf are the identities the accepted TrafficTargets allow to reach
// dest (with the number of targets allowing each).
func (p *policies) sourcesOf(dest model.Identity) map[model.Identity]int { return p.destSrcs[dest] }

// destinationsOf are the identities src may reach (with the number of
// targets allowing each).
func (p *policies) destinationsOf(src model.Identity) map[model.Identity]int { return p.srcDests[src] }

// apexesOf are the apexes of the accepted TrafficSplits that list backend.
func (p *policies) apexesOf(backend model.NN) set[model.NN] { return p.backendApex[backend] }

// setHTTPRouteGroup replaces the accepted matches of an HTTPRouteGroup
// (present false: none) and reports whether they changed.
func (p *policies) setHTTPRouteGroup(nn model.NN, m map[string]HTTPMatch, present bool) bool {
	_, changed := p.hrg.set(nn, m, present)
	return changed
}

// setTCPRoute replaces the accepted match of a TCPRoute (present false:
// none) and reports whether it changed.
func (p *policies) setTCPRoute(nn model.NN, m TCPMatch, present bool) bool {
	_, changed := p.tcp.set(nn, m, present)
	return changed
}

// setTarget replaces the accepted version of a TrafficTarget (nil: none)
// and updates the indexes. It returns the version it replaced and whether
// the accepted version changed.
func (p *policies) setTarget(nn model.NN, t *Target) (old *Target, changed bool) {
	old, changed = p.targets.set(nn, t, t != nil)
	if !changed {
		return old, false
	}
	if old != nil {
		multimap.Remove(p.destTargets, old.Dest, nn)
		for _, src := range old.Sources {
			multimap.Dec(p.srcDests, src, old.Dest, 1)
			multimap.Dec(p.destSrcs, old.Dest, src, 1)
		}
	}
	if t != nil {
		multimap.Add(p.destTargets, t.Dest, nn)
		for _, src := range t.Sources {
			multimap.Inc(p.srcDests, src, t.Dest)
			multimap.Inc(p.destSrcs, t.Dest, src)
		}
	}
	return old, true
}

// setSplit replaces the accepted version of a TrafficSplit (nil: none) and
// updates the backend index. It returns the version it replaced and whether
// the accepted version changed.
func (p *policies) setSplit(nn model.NN, s *Split) (old *Split, changed bool) {
	old, changed = p.splits.set(nn, s, s != nil)
	if !changed {
		return old, false
	}
	if old != nil {
		for _, b := range old.Backends {
			multimap.Remove(p.backendApex, b.Service, old.Apex)
		}
	}
	if s != nil {
		for _, b := range s.Backends {
			multimap.Add(p.backendApex, b.Service, s.Apex)
		}
	}
	return old, true
}

// judge records the verdict on the policy object nn of the observed kind
// key and returns a copy of it, the caller's to stamp and publish, when it
// differs from the last one (see sameVerdict), nil otherwise. The status
// names the object's kind as users write it (layout.KindName). An object
// rej does not refuse is accepted, with a warning when warn is not nil:
// the part of it warn names does not take effect everywhere.
func (p *policies) judge(key string, nn model.NN, apiVersion string, meta *meshv1.ObjectMeta, rej, warn *Rejection) *meshv1.PolicyStatus {
	kind := layout.KindName(key)
	st := &meshv1.PolicyStatus{
		Object:             &meshv1.ObjectRef{ApiVersion: apiVersion, Kind: kind, Namespace: nn.Namespace, Name: nn.Name, Uid: meta.GetUid()},
		ObservedGeneration: meta.GetGeneration(),
		Condition:          meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED,
		Reason:             ReasonAccepted,
		Message:            policy.Verdict(kind, nn.Namespace, nn.Name, nil),
	}
	if rej != nil {
		st.Condition = meshv1.PolicyCondition_POLICY_CONDITION_REJECTED
		st.Reason, st.FieldPath, st.Message = rej.Reason, rej.FieldPath, policy.Verdict(kind, nn.Namespace, nn.Name, rej)
	} else if warn != nil {
		st.Condition = meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING
		st.Reason, st.FieldPath, st.Message = warn.Reason, warn.FieldPath, policy.Warned(kind, nn.Namespace, nn.Name, warn)
	}
	k := policyKey{key, nn}
	old := p.verdicts[k]
	p.verdicts[k] = st
	if old != nil && sameVerdict(old, st) {
		return nil
	}
	return proto.Clone(st).(*meshv1.PolicyStatus)
}

// sameVerdict reports whether two statuses of one object say the same to
// its users: the same object (uid included), condition, reason, field and
// message. A new metadata.generation with the same verdict is not news.
func sameVerdict(a, b *meshv1.PolicyStatus) bool {
	return proto.Equal(a.GetObject(), b.GetObject()) && a.GetCondition() == b.GetCondition() &&
		a.GetReason() == b.GetReason() && a.GetFieldPath() == b.GetFieldPath() && a.GetMessage() == b.GetMessage()
}

// judged reports whether the object has a verdict.
func (p *policies) judged(key string, nn model.NN) bool {
	_, ok := p.verdicts[policyKey{key, nn}]
	return ok
}

// rejectedNow reports whether the object's verdict is a rejection.
func (p *policies) rejectedNow(key string, nn model.NN) bool {
	return p.verdicts[policyKey{key, nn}].GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED
}

// forget drops the verdict on a deleted policy object.
func (p *policies) forget(key string, nn model.NN) {
	delete(p.verdicts, policyKey{key, nn})
}

// rejected counts the policy objects whose latest verdict is a rejection.
func (p *policies) rejected() int {
	n := 0
	for _, st := range p.verdicts {
		if st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
			n++
		}
	}
	return n
}

// policyObject is an observed policy object.
type policyObject interface {
	GetApiVersion() string
	GetMeta() *meshv1.ObjectMeta
}

// review validates the policy object nn (obj; nil: deleted) of the observed
// kind key, and adds the verdict to d when it changed. It returns the
// value to accept (the zero value for a deleted object), and false when the
// object is rejected: its last accepted version then stays. A rejected
// object with a seeded version (Engine.Seed, a previous compiler's) returns
// that version with true, to be accepted in place of this engine's: the
// verdict stays a rejection.
func review[P interface {
	*O
	policyObject
}, O, V any](p *policies, d *Delta, key string, nn model.NN, obj P, validate func(model.NN, P) (V, *Rejection)) (V, bool) {
	return reviewWarn(p, d, key, nn, obj, validate, nil)
}

// reviewWarn is review with warn (nil: none) judging an accepted value:
// the object is then accepted with the warning it returns, if any.
func reviewWarn[P interface {
	*O
	policyObject
}, O, V any](p *policies, d *Delta, key string, nn model.NN, obj P, validate func(model.NN, P) (V, *Rejection), warn func(V) *Rejection) (V, bool) {
	k := policyKey{key, nn}
	p.reviewed.add(k)
	seed, seeded := p.seeds[k]
	delete(p.seeds, k)
	if obj == nil {
		p.forget(key, nn)
		var none V
		return none, true
	}
	v, rej := validate(nn, obj)
	var w *Rejection
	if rej == nil && warn != nil {
		w = warn(v)
	}
	if st := p.judge(key, nn, obj.GetApiVersion(), obj.GetMeta(), rej, w); st != nil {
		d.Statuses = append(d.Statuses, st)
	}
	if rej != nil && seeded {
		var kept V
		if json.Unmarshal(seed, &kept) == nil { // Seed checked it decodes
			return kept, true
		}
	}
	return v, rej == nil
}

// reviewRoutes validates the dirty route objects of one kind: get reads
// them from the model, accept records the accepted version of one (false:
// deleted) and reports whether it changed. It marks dirty the
// TrafficTargets that use a route whose accepted version changed.
func reviewRoutes[P interface {
	*O
	policyObject
}, O, V any](e *Engine, d *Delta, dirty set[model.NN], key string, get func(model.NN) P, validate func(model.NN, P) (V, *Rejection), accept func(model.NN, V, bool) bool) {
	for _, nn := range multimap.Sorted(dirty) {
		obj := get(nn)
		v, ok := review(&e.pol, d, key, nn, obj, validate)
		if !ok {
			continue
		}
		if accept(nn, v, obj != nil) {
			for _, tt := range e.m.RouteUsers(key, nn) {
				e.dirty.policy(layout.KindTrafficTarget, tt)
			}
		}
	}
}

// compilePolicies validates the dirty policy objects, updates the last
// accepted version of each, and marks what their changes touch.
func (e *Engine) compilePolicies(d *Delta) {
	reviewRoutes(e, d, e.dirty.hrg, layout.KindHTTPRouteGroup, e.m.HTTPRouteGroup, ValidateHTTPRouteGroup, e.pol.setHTTPRouteGroup)
	reviewRoutes(e, d, e.dirty.tcp, layout.KindTCPRoute, e.m.TCPRoute,
		func(_ model.NN, r *meshv1.TCPRoute) (TCPMatch, *Rejection) { return ValidateTCPRoute(r) }, e.pol.setTCPRoute)
	for _, nn := range multimap.Sorted(e.dirty.tt) {
		t, ok := review(&e.pol, d, layout.KindTrafficTarget, nn, e.m.TrafficTarget(nn), e.resolveTarget)
		if !ok {
			continue
		}
		if old, changed := e.pol.setTarget(nn, t); changed {
			e.dirty.target(old)
			e.dirty.target(t)
			for _, x := range []*Target{old, t} {
				if x != nil {
					e.markGRPCRoutes(x.Dest)
				}
			}
		}
	}
	e.compileRetryPolicies(d)
	e.compileUpstreams(d)
	e.compileIngresses(d)
	for _, nn := range multimap.Sorted(e.dirty.split) {
		s, ok := review(&e.pol, d, layout.KindTrafficSplit, nn, e.m.TrafficSplit(nn), ValidateTrafficSplit)
		if !ok {
			continue
		}
		if old, changed := e.pol.setSplit(nn, s); changed {
			if old != nil {
				e.dirty.service(old.Apex)
			}
			if s != nil {
				e.dirty.service(s.Apex)
			}
		}
	}
}

// resolveTarget resolves a TrafficTarget against the accepted routes.
func (e *Engine) resolveTarget(nn model.NN, tt *meshv1.TrafficTarget) (*Target, *Rejection) {
	return ResolveTrafficTarget(nn, tt, &e.pol)
}
