package compile

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// paperIngresses is the number of IngressBackends the ingress benchmarks
// add to the paper mesh, all admitting one ingress controller.
const paperIngresses = 500

// loadedIngress is the paper mesh with an ingress controller and
// paperIngresses IngressBackends admitting it.
func loadedIngress(b *testing.B) *Engine {
	b.Helper()
	e, _ := loaded(b, synth.Paper)
	objs := append(synth.IngressController("10.244.250.1", "10.244.250.2"), synth.Paper.IngressBackends(paperIngresses)...)
	if d := load(b, e, objs); len(d.Invalid) > 0 {
		b.Fatal(d.Invalid)
	}
	return e
}

// BenchmarkIncrementalIngress edits one of the IngressBackends (an IP
// range): the compile rewrites the inbound listener of its backend's
// identity and nothing else.
func BenchmarkIncrementalIngress(b *testing.B) {
	e := loadedIngress(b)
	objs := synth.Paper.IngressBackends(paperIngresses)
	percentiles(b, func(i int) {
		o := objs[(i*7919)%len(objs)]
		ib := proto.Clone(e.Model().Object(layout.KindIngressBackend, model.NN{Namespace: o.Namespace, Name: o.Name})).(*meshv1.IngressBackend)
		ib.Sources[1].Name = fmt.Sprintf("198.51.%d.0/24", i%250)
		if err := e.Apply(layout.KindIngressBackend, o.Namespace, o.Name, ib); err != nil {
			b.Fatal(err)
		}
		if d := e.Compile(); len(d.Resources) != 1 || len(d.Invalid) > 0 {
			b.Fatalf("an IngressBackend edit compiled %v (invalid %v)", keys(d), d.Invalid)
		}
	})
}

// BenchmarkIncrementalIngressController changes the ingress controller's
// endpoints (a third pod comes and goes): the compile rewrites the
// controller's ClusterLoadAssignment and the inbound listeners of the
// identities backing the IngressBackends' Services, reported as
// resources/op.
func BenchmarkIncrementalIngressController(b *testing.B) {
	e := loadedIngress(b)
	written := 0
	percentiles(b, func(i int) {
		ips := []string{"10.244.250.1", "10.244.250.2"}
		if i%2 == 0 {
			ips = append(ips, "10.244.250.3")
		}
		slice := synth.IngressController(ips...)[2]
		if err := e.Apply(slice.Kind, slice.Namespace, slice.Name, slice.Msg); err != nil {
			b.Fatal(err)
		}
		d := e.Compile()
		if len(d.Invalid) > 0 {
			b.Fatal(d.Invalid)
		}
		written += len(d.Resources)
	})
	b.ReportMetric(float64(written)/float64(b.N), "resources/op")
}
