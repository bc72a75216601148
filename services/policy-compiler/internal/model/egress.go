package model

import (
	"strings"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// egressIndex holds the observed Egress objects and the HTTPRouteGroups
// their matches name, both ways.
type egressIndex struct {
	objs      map[NN]*meshv1.Egress
	routes    map[NN][]NN            // Egress → HTTPRouteGroups its matches name
	routeUser map[NN]map[NN]struct{} // HTTPRouteGroup → Egresses naming it
}

func newEgressIndex() egressIndex {
	return egressIndex{objs: map[NN]*meshv1.Egress{}, routes: map[NN][]NN{}, routeUser: map[NN]map[NN]struct{}{}}
}

func (m *Model) applyEgress(nn NN, value proto.Message) (proto.Message, error) {
	x := &m.egress
	old, err := put(x.objs, nn, value)
	if err != nil {
		return nil, err
	}
	for _, r := range x.routes[nn] {
		multimap.Remove(x.routeUser, r, nn)
	}
	delete(x.routes, nn)
	if e := x.objs[nn]; e != nil {
		var refs []NN
		for _, mt := range e.GetMatches() {
			if mt.GetKind() != RuleKindHTTPRouteGroup || mt.GetName() == "" {
				continue
			}
			r := NN{nn.Namespace, mt.GetName()}
			refs = append(refs, r)
			multimap.Add(x.routeUser, r, nn)
		}
		if len(refs) > 0 {
			x.routes[nn] = refs
		}
	}
	return orNil(old), nil
}

// Egress returns an Egress, or nil.
func (m *Model) Egress(nn NN) *meshv1.Egress { return m.egress.objs[nn] }

// EgressNames lists every Egress, sorted.
func (m *Model) EgressNames() []NN { return multimap.Sorted(m.egress.objs) }

// EgressesNaming lists the Egresses whose matches name the HTTPRouteGroup
// nn, sorted.
func (m *Model) EgressesNaming(hrg NN) []NN { return multimap.Sorted(m.egress.routeUser[hrg]) }

// ExternalName is the lower-case external name of an ExternalName
// Service without its trailing dot; empty for any other Service.
func ExternalName(svc *meshv1.Service) string {
	if svc.GetType() != "ExternalName" {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(svc.GetExternalName(), "."))
}
