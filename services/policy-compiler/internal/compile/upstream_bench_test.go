package compile

import (
	"testing"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// BenchmarkIncrementalUpstream edits one of the paper mesh's 500
// UpstreamTrafficSettings (its maxConnections): the compile rewrites that
// Service's cluster and nothing else.
func BenchmarkIncrementalUpstream(b *testing.B) {
	cfg := synth.Paper
	e, _ := loaded(b, cfg)
	percentiles(b, func(i int) {
		svc := (i * 7919) % cfg.UpstreamTrafficSettings
		ns, name := cfg.SvcNamespace(svc), synth.SvcName(svc)+"-upstream"
		u := proto.Clone(e.Model().UpstreamTrafficSetting(model.NN{Namespace: ns, Name: name})).(*meshv1.UpstreamTrafficSetting)
		u.ConnectionSettings.Tcp.MaxConnections = proto.Int64(int64(1000 + i))
		if err := e.Apply("upstreamtrafficsetting", ns, name, u); err != nil {
			b.Fatal(err)
		}
		if d := e.Compile(); len(d.Resources) != 1 || len(d.Invalid) > 0 {
			b.Fatalf("an UpstreamTrafficSetting change compiled %v (invalid %v)", keys(d), d.Invalid)
		}
	})
}
