package model

import (
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// objectKinds are the observed kinds the model keeps without an index of
// its own: OSM's policy.openservicemesh.io kinds, whose compile parts keep
// what they need. A new such kind adds itself here.
var objectKinds = map[string]bool{
	layout.KindUpstreamTrafficSetting: true,
	layout.KindIngressBackend:         true,
}

// ObjectKind reports whether kind is kept by Object and ObjectNames.
func ObjectKind(kind string) bool { return objectKinds[kind] }

// applyObject stores an object of an object kind (nil: deletes it).
func (m *Model) applyObject(kind string, nn NN, value proto.Message) (proto.Message, error) {
	mp := m.objects[kind]
	if mp == nil {
		mp = map[NN]proto.Message{}
		m.objects[kind] = mp
	}
	return replace(mp, nn, value)
}

// Object returns the object of an object kind, or nil.
func (m *Model) Object(kind string, nn NN) proto.Message { return m.objects[kind][nn] }

// ObjectNames lists the objects of an object kind, sorted.
func (m *Model) ObjectNames(kind string) []NN { return multimap.Sorted(m.objects[kind]) }

// UpstreamTrafficSetting returns an UpstreamTrafficSetting, or nil.
func (m *Model) UpstreamTrafficSetting(nn NN) *meshv1.UpstreamTrafficSetting {
	u, _ := m.objects[layout.KindUpstreamTrafficSetting][nn].(*meshv1.UpstreamTrafficSetting)
	return u
}
