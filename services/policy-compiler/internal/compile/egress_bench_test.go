package compile

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// BenchmarkIncrementalEndpointEgress is BenchmarkIncrementalEndpoint in the
// paper mesh with 1,000 Egress objects: an endpoint change still writes
// one resource.
func BenchmarkIncrementalEndpointEgress(b *testing.B) { incrementalEndpoint(b, synth.PaperEgress) }

// BenchmarkIncrementalEgress edits one of the 1,000 Egress objects of the
// paper mesh at a time (a host added, then removed): only its two sources'
// egress listeners and routes are rebuilt.
func BenchmarkIncrementalEgress(b *testing.B) {
	cfg := synth.PaperEgress
	e, _ := loaded(b, cfg)
	percentiles(b, func(i int) {
		j := (i / 2 * 7919) % cfg.Egresses
		if j%3 == 2 {
			j-- // a tcp Egress has no hosts to edit
		}
		ns := cfg.SvcNamespace(j % cfg.Services)
		nn := model.NN{Namespace: ns, Name: fmt.Sprintf("egress-%05d", j)}
		next := proto.Clone(e.Model().Egress(nn)).(*meshv1.Egress)
		if i%2 == 0 {
			next.Hosts = append(next.Hosts, fmt.Sprintf("extra-%d.example.com", i))
		} else {
			next.Hosts = next.Hosts[:1]
		}
		if err := e.Apply("egress", nn.Namespace, nn.Name, next); err != nil {
			b.Fatal(err)
		}
		d := e.Compile()
		if len(d.Invalid) > 0 || len(d.Statuses) > 0 {
			b.Fatalf("invalid %v, statuses %v", d.Invalid, d.Statuses)
		}
		if n := len(d.Resources) + len(d.DeletedResources); n == 0 || n > 6 {
			b.Fatalf("an Egress edit wrote %d resources, want 1 to 6", n)
		}
	})
}
