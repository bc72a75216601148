package compile

import (
	"reflect"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// Kinds of policy objects, as in PolicyStatus.object.kind.
const (
	KindTrafficTarget  = "TrafficTarget"
	KindHTTPRouteGroup = "HTTPRouteGroup"
	KindTCPRoute       = "TCPRoute"
	KindTrafficSplit   = "TrafficSplit"
)

// engineRoutes looks route objects up among the accepted ones.
type engineRoutes struct{ e *Engine }

var _ RouteLookup = engineRoutes{}

// HTTPRouteGroup returns the last accepted matches of a group.
func (r engineRoutes) HTTPRouteGroup(nn model.NN) (map[string]HTTPMatch, bool) {
	m, ok := r.e.goodHRG[nn]
	return m, ok
}

// TCPRoute returns the last accepted match of a TCPRoute.
func (r engineRoutes) TCPRoute(nn model.NN) (TCPMatch, bool) {
	m, ok := r.e.goodTCP[nn]
	return m, ok
}

// compilePolicies validates the dirty policy objects, updates the last good
// version of each, and marks what their changes touch.
func (e *Engine) compilePolicies(d *Delta) {
	for _, nn := range sortedNN(e.dirtyHRG) {
		g := e.m.HTTPRouteGroup(nn)
		var good map[string]HTTPMatch
		var rej *Rejection
		if g != nil {
			good, rej = ValidateHTTPRouteGroup(nn, g)
			e.verdict(d, layout.KindHTTPRouteGroup, KindHTTPRouteGroup, nn, g.GetApiVersion(), g.GetMeta(), rej)
		} else {
			e.forget(layout.KindHTTPRouteGroup, nn)
		}
		if rej != nil {
			continue
		}
		old, had := e.goodHRG[nn]
		if g == nil {
			delete(e.goodHRG, nn)
		} else {
			e.goodHRG[nn] = good
		}
		if had != (g != nil) || !reflect.DeepEqual(old, good) {
			for _, tt := range e.m.RouteUsers(layout.KindHTTPRouteGroup, nn) {
				e.dirtyTT.add(tt)
			}
		}
	}
	for _, nn := range sortedNN(e.dirtyTCP) {
		r := e.m.TCPRoute(nn)
		var good TCPMatch
		var rej *Rejection
		if r != nil {
			good, rej = ValidateTCPRoute(r)
			e.verdict(d, layout.KindTCPRoute, KindTCPRoute, nn, r.GetApiVersion(), r.GetMeta(), rej)
		} else {
			e.forget(layout.KindTCPRoute, nn)
		}
		if rej != nil {
			continue
		}
		old, had := e.goodTCP[nn]
		if r == nil {
			delete(e.goodTCP, nn)
		} else {
			e.goodTCP[nn] = good
		}
		if had != (r != nil) || !reflect.DeepEqual(old, good) {
			for _, tt := range e.m.RouteUsers(layout.KindTCPRoute, nn) {
				e.dirtyTT.add(tt)
			}
		}
	}
	for _, nn := range sortedNN(e.dirtyTT) {
		tt := e.m.TrafficTarget(nn)
		var good *Target
		if tt != nil {
			var rej *Rejection
			good, rej = ResolveTrafficTarget(nn, tt, engineRoutes{e})
			e.verdict(d, layout.KindTrafficTarget, KindTrafficTarget, nn, tt.GetApiVersion(), tt.GetMeta(), rej)
			if rej != nil {
				continue // the last good version stays
			}
		} else {
			e.forget(layout.KindTrafficTarget, nn)
		}
		e.setTarget(nn, good)
	}
	for _, nn := range sortedNN(e.dirtySplit) {
		s := e.m.TrafficSplit(nn)
		var good *Split
		if s != nil {
			var rej *Rejection
			good, rej = ValidateTrafficSplit(nn, s)
			e.verdict(d, layout.KindTrafficSplit, KindTrafficSplit, nn, s.GetApiVersion(), s.GetMeta(), rej)
			if rej != nil {
				continue
			}
		} else {
			e.forget(layout.KindTrafficSplit, nn)
		}
		e.setSplit(nn, good)
	}
}

// setTarget replaces the accepted version of a TrafficTarget (nil: none).
func (e *Engine) setTarget(nn model.NN, t *Target) {
	old := e.goodTT[nn]
	if reflect.DeepEqual(old, t) {
		return
	}
	if old != nil {
		multimap.Remove(e.destTTs, old.Dest, nn)
		for _, src := range old.Sources {
			multimap.Dec(e.srcDests, src, old.Dest, 1)
			multimap.Dec(e.destSrcs, old.Dest, src, 1)
			e.dirtyOut.add(src)
		}
		e.dirtyIn.add(old.Dest)
		delete(e.goodTT, nn)
	}
	if t != nil {
		multimap.Add(e.destTTs, t.Dest, nn)
		for _, src := range t.Sources {
			multimap.Inc(e.srcDests, src, t.Dest)
			multimap.Inc(e.destSrcs, t.Dest, src)
			e.dirtyOut.add(src)
		}
		e.dirtyIn.add(t.Dest)
		e.goodTT[nn] = t
	}
}

// setSplit replaces the accepted version of a TrafficSplit (nil: none).
func (e *Engine) setSplit(nn model.NN, s *Split) {
	old := e.goodSplit[nn]
	if reflect.DeepEqual(old, s) {
		return
	}
	if old != nil {
		for _, b := range old.Backends {
			multimap.Remove(e.backendApex, b.Service, old.Apex)
		}
		e.dirtySvc.add(old.Apex)
		delete(e.goodSplit, nn)
	}
	if s != nil {
		for _, b := range s.Backends {
			multimap.Add(e.backendApex, b.Service, s.Apex)
		}
		e.dirtySvc.add(s.Apex)
		e.goodSplit[nn] = s
	}
}

// verdict records the verdict on a policy object and adds it to the delta
// when it differs from the last one.
func (e *Engine) verdict(d *Delta, layoutKind, kind string, nn model.NN, apiVersion string, meta *meshv1.ObjectMeta, rej *Rejection) {
	st := &meshv1.PolicyStatus{
		Object:             &meshv1.ObjectRef{ApiVersion: apiVersion, Kind: kind, Namespace: nn.Namespace, Name: nn.Name, Uid: meta.GetUid()},
		ObservedGeneration: meta.GetGeneration(),
		Condition:          meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED,
		Reason:             ReasonAccepted,
		Message:            kind + " " + nn.String() + " is valid",
	}
	if rej != nil {
		st.Condition = meshv1.PolicyCondition_POLICY_CONDITION_REJECTED
		st.Reason, st.FieldPath, st.Message = rej.Reason, rej.FieldPath, kind+" "+nn.String()+" rejected: "+rej.Message
	}
	k := policyKey{layoutKind, nn}
	if old := e.verdicts[k]; old != nil && proto.Equal(old, st) {
		return
	}
	e.verdicts[k] = st
	d.Statuses = append(d.Statuses, st)
}

func (e *Engine) forget(layoutKind string, nn model.NN) {
	delete(e.verdicts, policyKey{layoutKind, nn})
}

// Rejected counts the policy objects whose latest verdict is a rejection.
func (e *Engine) Rejected() int {
	n := 0
	for _, st := range e.verdicts {
		if st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
			n++
		}
	}
	return n
}
