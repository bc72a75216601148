package compile

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// BenchmarkIncrementalRetry edits one of the 500 Retries of the 10k-service
// mesh (its numRetries): the compile rebuilds and writes only that
// source's route copy.
func BenchmarkIncrementalRetry(b *testing.B) {
	cfg := synth.Paper
	e, _ := loaded(b, cfg)
	names := e.Model().RetryNames()
	if len(names) != cfg.Retries {
		b.Fatalf("%d Retries, want %d", len(names), cfg.Retries)
	}
	percentiles(b, func(i int) {
		nn := names[(i*7919)%len(names)]
		r := proto.Clone(e.Model().Retry(nn)).(*meshv1.Retry)
		n := int64(1 + i%7)
		if n == r.GetRetryPolicy().GetNumRetries() {
			n++
		}
		r.RetryPolicy.NumRetries = &n
		if err := e.Apply(layout.KindRetry, nn.Namespace, nn.Name, r); err != nil {
			b.Fatal(err)
		}
		d := e.Compile()
		if len(d.Resources) != 1 || d.Resources[0].Type != layout.TypeRoute || len(d.Groups) != 0 || len(d.DeletedResources) != 0 {
			b.Fatalf("a Retry edit wrote %v", keys(d))
		}
	})
}
