package model

import (
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// Kind names of route objects in TrafficTarget rules.
const (
	RuleKindHTTPRouteGroup = "HTTPRouteGroup"
	RuleKindTCPRoute       = "TCPRoute"
)

func (m *Model) applyService(nn NN, value proto.Message) (proto.Message, error) {
	old, err := put(m.services, nn, value)
	if err != nil {
		return nil, err
	}
	if old != nil {
		m.unindexService(nn, old)
	}
	if svc := m.services[nn]; svc != nil {
		sel := svc.GetSelector()
		if len(sel) > 0 {
			lk := selectorKey(nn.Namespace, sel)
			multimap.Add(m.selSvcs, lk, nn.Name)
			for pod := range m.labelPods[lk] {
				pnn := NN{nn.Namespace, pod}
				if selects(sel, m.pods[pnn].GetLabels()) {
					m.link(pnn, nn, m.podIdentity[pnn])
				}
			}
		}
		// A selectorless Service is backed by the identities it declares
		// (selectorless.go), as if by one pod of each.
		ids, _ := DeclaredIdentities(nn, svc)
		for _, id := range ids {
			multimap.Inc(m.svcIDs, nn, id)
			multimap.Inc(m.idServices, id, nn)
		}
	}
	return orNil(old), nil
}

// selectorKey is the label a service is indexed under: the first of its
// selector in key order. Every pod it selects carries that label.
func selectorKey(namespace string, sel map[string]string) labelKey {
	first := ""
	for k := range sel {
		if first == "" || k < first {
			first = k
		}
	}
	return labelKey{namespace, first + "=" + sel[first]}
}

// unindexService removes a service from the selector and identity indexes.
func (m *Model) unindexService(nn NN, old *meshv1.Service) {
	if sel := old.GetSelector(); len(sel) > 0 {
		multimap.Remove(m.selSvcs, selectorKey(nn.Namespace, sel), nn.Name)
	}
	for id, n := range m.svcIDs[nn] {
		multimap.Dec(m.idServices, id, nn, n)
	}
	delete(m.svcIDs, nn)
	for pnn := range m.svcPods[nn] {
		svcs := m.podServices[pnn]
		for i, s := range svcs {
			if s == nn {
				m.podServices[pnn] = append(svcs[:i:i], svcs[i+1:]...)
				break
			}
		}
	}
	delete(m.svcPods, nn)
}

// link records that the counted pod (running as id) backs svc.
func (m *Model) link(pod, svc NN, id Identity) {
	m.podServices[pod] = append(m.podServices[pod], svc)
	multimap.Add(m.svcPods, svc, pod)
	multimap.Inc(m.svcIDs, svc, id)
	multimap.Inc(m.idServices, id, svc)
}

func (m *Model) applySlice(nn NN, value proto.Message) (proto.Message, error) {
	old, err := put(m.slices, nn, value)
	if err != nil {
		return nil, err
	}
	if old != nil {
		svc := NN{nn.Namespace, old.GetService().GetName()}
		multimap.Remove(m.svcSlices, svc, nn)
	}
	if s := m.slices[nn]; s != nil {
		multimap.Add(m.svcSlices, NN{nn.Namespace, s.GetService().GetName()}, nn)
	}
	return orNil(old), nil
}

// SliceService is the service an endpoint slice belongs to.
func SliceService(nn NN, s *meshv1.EndpointSlice) NN {
	return NN{nn.Namespace, s.GetService().GetName()}
}

// counts reports whether a pod counts as a running instance of its identity.
func counts(p *meshv1.Pod) bool {
	if p == nil || p.GetServiceAccount() == "" {
		return false
	}
	switch p.GetPhase() {
	case meshv1.PodPhase_POD_PHASE_SUCCEEDED, meshv1.PodPhase_POD_PHASE_FAILED:
		return false
	}
	return true
}

func (m *Model) applyPod(nn NN, value proto.Message) (proto.Message, error) {
	old, err := put(m.pods, nn, value)
	if err != nil {
		return nil, err
	}
	if id, ok := m.podIdentity[nn]; ok {
		for _, svc := range m.podServices[nn] {
			multimap.Dec(m.svcIDs, svc, id, 1)
			multimap.Dec(m.idServices, id, svc, 1)
			multimap.Remove(m.svcPods, svc, nn)
		}
		delete(m.podServices, nn)
		delete(m.podIdentity, nn)
		if m.idPods[id]--; m.idPods[id] <= 0 {
			delete(m.idPods, id)
		}
		for k, v := range old.GetLabels() {
			multimap.Remove(m.labelPods, labelKey{nn.Namespace, k + "=" + v}, nn.Name)
		}
	}
	p := m.pods[nn]
	if !counts(p) {
		return orNil(old), nil
	}
	id := Identity{nn.Namespace, p.GetServiceAccount()}
	m.podIdentity[nn] = id
	m.idPods[id]++
	m.podServices[nn] = nil
	for k, v := range p.GetLabels() {
		lk := labelKey{nn.Namespace, k + "=" + v}
		multimap.Add(m.labelPods, lk, nn.Name)
		for svcName := range m.selSvcs[lk] {
			svc := NN{nn.Namespace, svcName}
			if selects(m.services[svc].GetSelector(), p.GetLabels()) {
				m.link(nn, svc, id)
			}
		}
	}
	return orNil(old), nil
}

// selects reports whether every selector label is among labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func (m *Model) applyTrafficTarget(nn NN, value proto.Message) (proto.Message, error) {
	old, err := put(m.trafficTargets, nn, value)
	if err != nil {
		return nil, err
	}
	for _, r := range m.ttRoutes[nn] {
		multimap.Remove(m.routeUsers, r, nn)
	}
	delete(m.ttRoutes, nn)
	if tt := m.trafficTargets[nn]; tt != nil {
		var refs []routeRef
		for _, rule := range tt.GetRules() {
			var kind string
			switch rule.GetKind() {
			case RuleKindHTTPRouteGroup:
				kind = layout.KindHTTPRouteGroup
			case RuleKindTCPRoute:
				kind = layout.KindTCPRoute
			default:
				continue
			}
			r := routeRef{kind, NN{nn.Namespace, rule.GetName()}}
			refs = append(refs, r)
			multimap.Add(m.routeUsers, r, nn)
		}
		m.ttRoutes[nn] = refs
	}
	return orNil(old), nil
}

func (m *Model) applySplit(nn NN, value proto.Message) (proto.Message, error) {
	old, err := put(m.trafficSplits, nn, value)
	if err != nil {
		return nil, err
	}
	if old != nil {
		multimap.Remove(m.splitsApex, ApexOf(nn.Namespace, old), nn)
	}
	if s := m.trafficSplits[nn]; s != nil {
		multimap.Add(m.splitsApex, ApexOf(nn.Namespace, s), nn)
	}
	return orNil(old), nil
}

// ApexOf is the apex Service of a TrafficSplit in namespace. SMI allows the
// apex as a short name or as an FQDN ("svc.ns.svc.cluster.local"); the apex
// is always in the split's namespace, so only the first label counts.
func ApexOf(namespace string, s *meshv1.TrafficSplit) NN {
	name, _, _ := strings.Cut(s.GetService(), ".")
	return NN{namespace, name}
}

// PodBacking returns the identity a pod counts for and the services that
// select it; ok is false when the pod does not count (absent, finished or
// without a service account).
func (m *Model) PodBacking(nn NN) (id Identity, services []NN, ok bool) {
	id, ok = m.podIdentity[nn]
	if !ok {
		return Identity{}, nil, false
	}
	return id, append([]NN(nil), m.podServices[nn]...), true
}

// SliceServiceOf is the service an observed endpoint slice belongs to, or
// nil when the slice is absent.
func (m *Model) SliceServiceOf(nn NN) *NN {
	s := m.slices[nn]
	if s == nil {
		return nil
	}
	svc := SliceService(nn, s)
	return &svc
}
