package compile

import (
	"testing"

	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// surfaceObjects is the paper mesh with OSM's whole policy surface at
// once, the mesh issue 18 measures the compiler in: 10k Services, their
// SMI policy, 500 Retries and 500 UpstreamTrafficSettings (synth.Paper),
// 1,000 Egresses (synth.PaperEgress), and an ingress controller with 500
// IngressBackends admitting it.
func surfaceObjects() []synth.Object {
	objs := synth.Generate(synth.PaperEgress)
	objs = append(objs, synth.IngressController("10.244.250.1", "10.244.250.2")...)
	return append(objs, synth.PaperEgress.IngressBackends(paperIngresses)...)
}

// BenchmarkIncrementalEndpointSurface is BenchmarkIncrementalEndpoint on
// the mesh with the whole policy surface: one endpoint added, one
// ClusterLoadAssignment written, whatever else the mesh holds.
func BenchmarkIncrementalEndpointSurface(b *testing.B) {
	e := newEngine()
	load(b, e, surfaceObjects())
	incrementalEndpointOn(b, e, synth.PaperEgress)
}
