package synth_test

import (
	"strings"
	"testing"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/compile"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// TestPaperShape: the paper mesh, with its 1,000 Egress objects
// (PaperEgress adds them and nothing else).
func TestPaperShape(t *testing.T) {
	count := map[string]int{}
	keys := map[string]bool{}
	for _, o := range synth.Generate(synth.PaperEgress) {
		count[o.Kind]++
		if keys[o.Key()] {
			t.Fatalf("duplicate key %s", o.Key())
		}
		keys[o.Key()] = true
	}
	want := map[string]int{
		layout.KindService: 10000, layout.KindPod: 50000, layout.KindTrafficTarget: 10000,
		layout.KindHTTPRouteGroup: 500, layout.KindTrafficSplit: 200, layout.KindEndpointSlice: 10000,
		layout.KindRetry:  500,
		layout.KindEgress: 1000,

		layout.KindUpstreamTrafficSetting: 500,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%d %s objects, want %d", count[k], k, n)
		}
	}
}

// Every generated policy is valid, and every split backend and TCP target
// resolves: a synthetic mesh exercises the compiler, not its rejections.
func TestGeneratedMeshCompilesClean(t *testing.T) {
	cfg := synth.Config{Namespaces: 10, Services: 300, PodsPerService: 2, TrafficTargets: 300, HTTPRouteGroups: 30, TrafficSplits: 10, Retries: 20, Egresses: 30, UpstreamTrafficSettings: 30}
	e := compile.New(compile.Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}})
	for _, o := range synth.Generate(cfg) {
		if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	d := e.Compile()
	if len(d.Invalid) > 0 {
		t.Fatal(d.Invalid)
	}
	for _, st := range d.Statuses {
		if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
			t.Errorf("%s %s/%s: %s", st.GetObject().GetKind(), st.GetObject().GetNamespace(), st.GetObject().GetName(), st.GetMessage())
		}
	}
	if got, want := len(d.Statuses), 300+30+10+10+20+30+30; got != want {
		t.Errorf("%d verdicts, want %d", got, want)
	}
	if len(e.Groups()) != cfg.Services {
		t.Errorf("%d groups, want %d", len(e.Groups()), cfg.Services)
	}
	// Every Retry's source reaches its destination, so each gets its copy.
	retryRoutes := 0
	for _, r := range e.Resources() {
		if r.Type == layout.TypeRoute && strings.Contains(r.Name, "|retry|") {
			retryRoutes++
		}
	}
	if retryRoutes != cfg.Retries {
		t.Errorf("%d retry routes, want one per Retry, %d", retryRoutes, cfg.Retries)
	}
}
