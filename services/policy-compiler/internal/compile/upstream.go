package compile

import (
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// Upstream is an accepted UpstreamTrafficSetting (libs/policy).
type Upstream = policy.Upstream

// upstreams holds the UpstreamTrafficSettings: the accepted version of
// each, which Service each names (observed, to find the settings a
// change touches) and which Services' resources they changed since the
// last Compile.
//
// One setting per Service: the first by name of those whose host names
// the Service; the others are rejected (policy.UpstreamHostConflict) and
// apply nothing. A UTS change rebuilds only its Service's clusters
// (compileUpstreamServices) and the inbound listeners of the identities
// that serve it: the cost grows with the Service, not the mesh.
type upstreams struct {
	accepted accepted[*Upstream]
	host     map[model.NN]model.NN      // setting → the Service its host names (observed)
	byHost   map[model.NN]set[model.NN] // Service → settings whose host names it
	bySvc    map[model.NN]model.NN      // Service → its accepted setting
	dirty    set[model.NN]              // Services whose accepted setting changed
}

func newUpstreams() upstreams {
	return upstreams{
		accepted: accepted[*Upstream]{},
		host:     map[model.NN]model.NN{},
		byHost:   map[model.NN]set[model.NN]{},
		bySvc:    map[model.NN]model.NN{},
		dirty:    set[model.NN]{},
	}
}

// forService is the accepted setting of svc, or nil.
func (u *upstreams) forService(svc model.NN) *Upstream {
	nn, ok := u.bySvc[svc]
	if !ok {
		return nil
	}
	return u.accepted[nn]
}

// winner is the setting that may configure svc: the first by name of
// those whose host names it.
func (u *upstreams) winner(svc model.NN) (model.NN, bool) {
	names := multimap.Sorted(u.byHost[svc])
	if len(names) == 0 {
		return model.NN{}, false
	}
	return names[0], true
}

// set replaces the accepted version of setting nn (nil: none) and marks
// the Services of the old and new versions dirty.
func (u *upstreams) set(nn model.NN, up *Upstream) {
	old, changed := u.accepted.set(nn, up, up != nil)
	if !changed {
		return
	}
	if old != nil {
		svc := model.NN{Namespace: old.Service.Namespace, Name: old.Service.Name}
		if u.bySvc[svc] == nn {
			delete(u.bySvc, svc)
		}
		u.dirty.add(svc)
	}
	if up != nil {
		svc := model.NN{Namespace: up.Service.Namespace, Name: up.Service.Name}
		u.bySvc[svc] = nn
		u.dirty.add(svc)
	}
}

// upstreamObserved records where the observed setting nn now points and
// marks every setting of its old and new Service dirty: which one wins a
// Service may have changed.
func (e *Engine) upstreamObserved(nn model.NN) {
	e.dirty.policy(layout.KindUpstreamTrafficSetting, nn)
	if old, ok := e.ups.host[nn]; ok {
		multimap.Remove(e.ups.byHost, old, nn)
		delete(e.ups.host, nn)
		e.markUpstreamsOf(old)
	}
	if u := e.m.UpstreamTrafficSetting(nn); u != nil {
		if ref, rej := policy.UpstreamHost(nn.Namespace, u.GetHost()); rej == nil {
			svc := model.NN{Namespace: ref.Namespace, Name: ref.Name}
			e.ups.host[nn] = svc
			multimap.Add(e.ups.byHost, svc, nn)
			e.markUpstreamsOf(svc)
		}
	}
}

// upstreamServiceChanged marks the settings naming svc dirty: whether it
// exists decides their verdict.
func (e *Engine) upstreamServiceChanged(svc model.NN) {
	if len(e.ups.byHost[svc]) > 0 {
		e.markUpstreamsOf(svc)
	}
}

func (e *Engine) markUpstreamsOf(svc model.NN) {
	for nn := range e.ups.byHost[svc] {
		e.dirty.policy(layout.KindUpstreamTrafficSetting, nn)
	}
}

// compileUpstreams validates the dirty UpstreamTrafficSettings and
// records the accepted version of each, with the gRPC flavour's warning
// when its proxyless clients apply only part of it (upstreamWarning). A setting another one displaces
// from its Service applies nothing; one rejected for its own fault keeps
// its last accepted version.
func (e *Engine) compileUpstreams(d *Delta) {
	for _, nn := range multimap.Sorted(e.dirty.objs[layout.KindUpstreamTrafficSetting]) {
		obj := e.m.UpstreamTrafficSetting(nn)
		up, ok := reviewWarn(&e.pol, d, layout.KindUpstreamTrafficSetting, nn, obj, e.resolveUpstream, e.upstreamWarning)
		switch {
		case e.displaced(nn): // never accepted (resolveUpstream), nor seeded
			e.ups.set(nn, nil)
		case ok:
			e.ups.set(nn, up)
		}
	}
}

// displaced reports whether another setting configures the Service the
// setting nn names.
func (e *Engine) displaced(nn model.NN) bool {
	svc, ok := e.ups.host[nn]
	if !ok {
		return false
	}
	w, _ := e.ups.winner(svc)
	return w != nn
}

// resolveUpstream validates a setting and resolves its host.
func (e *Engine) resolveUpstream(nn model.NN, u *meshv1.UpstreamTrafficSetting) (*Upstream, *Rejection) {
	up, rej := policy.UpstreamTrafficSetting(nn.Namespace, u)
	if rej != nil {
		return nil, rej
	}
	svc := model.NN{Namespace: up.Service.Namespace, Name: up.Service.Name}
	if w, ok := e.ups.winner(svc); ok && w != nn {
		return nil, policy.UpstreamHostConflict(u.GetHost(), up.Service, w.String())
	}
	if e.m.Service(svc) == nil {
		return nil, policy.UpstreamServiceNotFound(u.GetHost(), up.Service)
	}
	return up, nil
}

// compileUpstreamServices rebuilds the clusters of the Services whose
// setting changed (unless compileService rebuilt them whole) and marks the
// inbound listeners of the identities serving them.
func (e *Engine) compileUpstreamServices(d *Delta) {
	for _, svc := range multimap.Sorted(e.ups.dirty) {
		if _, done := e.dirty.svc[svc]; !done {
			up := e.ups.forService(svc)
			ids, td, tp := e.svcs.ids(svc), e.trustDomain(), e.tlsParams()
			for _, sp := range e.svcs.ports(svc) {
				e.put(d, layout.TypeCluster, sp.cluster())(buildCluster(sp, ids, td, tp, up))
				if e.opts.ProxylessGRPC && sp.protocol.IsHTTP() {
					e.put(d, layout.TypeCluster, GRPCClusterName(sp.svc, sp.port))(buildGRPCCluster(sp, ids, td, up))
				}
			}
		}
		for id := range e.reach.backersOf(svc) {
			e.dirty.inbound(id)
		}
	}
	e.ups.dirty = set[model.NN]{}
}
