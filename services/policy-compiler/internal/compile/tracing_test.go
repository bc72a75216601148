package compile

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// tracingMeshConfig is the synth MeshConfig (SMI mode) with tracing tc.
func tracingMeshConfig(tc *meshv1.TracingSpec) synth.Object {
	o := synth.MeshConfig(false)
	o.Msg.(*meshv1.MeshConfig).Observability = &meshv1.ObservabilitySpec{Tracing: tc}
	return o
}

// tracedMesh is the bookstore with every kind of HTTP connection manager
// the Envoy flavour writes (service listeners, a Retry source's copy,
// inbound HTTP, IngressBackend chains, egress HTTP), under a MeshConfig
// with tracing tc.
func tracedMesh(tc *meshv1.TracingSpec) []synth.Object {
	objs := append(synth.BookstoreEgress(), synth.BookstoreIngress()...)
	objs = append(objs, synth.Retry("bookbuyer", "bookbuyer-retry", "bookbuyer", "bookstore", "bookstore"))
	return append(objs, tracingMeshConfig(tc))
}

// tracingEngine is an engine of the synth mesh with the gRPC flavour,
// which stays untraced.
func tracingEngine() *Engine {
	return New(Options{MeshName: synth.MeshName, MeshConfig: model.NN{Namespace: synth.MeshConfigNamespace, Name: synth.MeshConfigName}, ProxylessGRPC: true})
}

func fraction(f float64) *float64 { return &f }

var (
	zipkinSpec = &meshv1.TracingSpec{Enable: true, Address: "jaeger.tracing.svc.cluster.local", Port: 9411, SampledFraction: fraction(0.25)}
	otelSpec   = &meshv1.TracingSpec{Enable: true, Provider: "opentelemetry", Address: "otel-collector.tracing", Port: 4317}
)

// wantTracing is the tracing config every connection manager should carry:
// written out here, not by the compiler's builder.
func wantTracing(t *testing.T, tc *meshv1.TracingSpec) *hcmv3.HttpConnectionManager_Tracing {
	t.Helper()
	if !tc.GetEnable() {
		return nil
	}
	var name string
	var cfg proto.Message
	if tc.GetProvider() == "opentelemetry" {
		name = "envoy.tracers.opentelemetry"
		cfg = &tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "envoy-tracing-cluster", Authority: tc.GetAddress()}}}}
	} else {
		name = "envoy.tracers.zipkin"
		ep := tc.GetEndpoint()
		if ep == "" {
			ep = "/api/v2/spans"
		}
		cfg = &tracev3.ZipkinConfig{CollectorCluster: "envoy-tracing-cluster", CollectorEndpoint: ep,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, CollectorHostname: tc.GetAddress()}
	}
	a, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}}
	if tc.SampledFraction != nil {
		tr.RandomSampling = &typev3.Percent{Value: tc.GetSampledFraction() * 100}
	}
	return tr
}

// connectionManagers are the HTTP connection managers of every listener,
// by listener name, each (and its tracer's config) checked with
// ValidateAll.
func connectionManagers(t *testing.T, e *Engine) map[string][]*hcmv3.HttpConnectionManager {
	t.Helper()
	out := map[string][]*hcmv3.HttpConnectionManager{}
	for _, r := range e.Resources() {
		if r.TypeURL != resourcev3.ListenerType {
			continue
		}
		l := &listenerv3.Listener{}
		if err := proto.Unmarshal(r.Bytes, l); err != nil {
			t.Fatal(err)
		}
		var filters []*listenerv3.Filter
		for _, fc := range append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain()) {
			filters = append(filters, fc.GetFilters()...)
		}
		if api := l.GetApiListener().GetApiListener(); api != nil { // the gRPC flavour's
			filters = append(filters, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: api}})
		}
		for _, f := range filters {
			if f.GetName() != "envoy.filters.network.http_connection_manager" {
				continue
			}
			h := unpack(t, f.GetTypedConfig(), &hcmv3.HttpConnectionManager{})
			if err := h.ValidateAll(); err != nil {
				t.Errorf("%s: %v", l.GetName(), err)
			}
			if p := h.GetTracing().GetProvider(); p != nil {
				var cfg validated = &tracev3.ZipkinConfig{}
				if p.GetName() == "envoy.tracers.opentelemetry" {
					cfg = &tracev3.OpenTelemetryConfig{}
				}
				if err := unpack(t, p.GetTypedConfig(), cfg).ValidateAll(); err != nil {
					t.Errorf("%s tracer: %v", l.GetName(), err)
				}
			}
			out[l.GetName()] = append(out[l.GetName()], h)
		}
	}
	return out
}

// checkTracing checks that every HTTP connection manager an Envoy group
// lists carries the tracing config of tc, and that one of each kind was
// seen; that none a gRPC group lists carries one; and that the tracing
// cluster exists and every Envoy group (and no gRPC group) lists it
// exactly while tracing is on.
func checkTracing(t *testing.T, e *Engine, tc *meshv1.TracingSpec) {
	t.Helper()
	want := wantTracing(t, tc)
	envoyListeners, grpcListeners := map[string]bool{}, map[string]bool{}
	groups := 0
	for _, g := range e.Groups() {
		if g.Flavour == layout.ProxylessGRPC {
			for _, n := range e.groups.namesOf(g, resourcev3.ListenerType) {
				grpcListeners[n] = true
			}
			if slices.Contains(e.groups.namesOf(g, resourcev3.ClusterType), TracingCluster) {
				t.Errorf("gRPC group %s lists the tracing cluster", g.Key())
			}
			continue
		}
		groups++
		for _, n := range e.GroupNames(g.Identity, resourcev3.ListenerType) {
			envoyListeners[n] = true
		}
		if has := slices.Contains(e.GroupNames(g.Identity, resourcev3.ClusterType), TracingCluster); has != (want != nil) {
			t.Errorf("group %s lists the tracing cluster: %v, tracing on: %v", g.Key(), has, want != nil)
		}
	}
	if groups == 0 || len(grpcListeners) == 0 {
		t.Fatalf("%d Envoy groups, %d gRPC listeners", groups, len(grpcListeners))
	}
	kinds := map[string]int{}
	for name, hs := range connectionManagers(t, e) {
		for _, h := range hs {
			switch {
			case envoyListeners[name]:
				kind, _, _ := strings.Cut(h.GetStatPrefix(), ":")
				kinds[kind]++
				if diff := cmp.Diff(want, h.GetTracing(), protocmp.Transform()); diff != "" {
					t.Errorf("%s tracing (-want +got):\n%s", name, diff)
				}
			case grpcListeners[name]:
				kinds["grpc"]++
				if h.GetTracing() != nil {
					t.Errorf("gRPC flavour listener %s is traced", name)
				}
			}
		}
	}
	for _, k := range []string{"outbound", "inbound", "ingress", "egress", "grpc"} {
		if kinds[k] == 0 {
			t.Errorf("no %s HTTP connection manager compiled (saw %v)", k, kinds)
		}
	}
	c := e.Resource(layout.TypeCluster, TracingCluster)
	if (c != nil) != (want != nil) {
		t.Fatalf("tracing cluster exists: %v, tracing on: %v", c != nil, want != nil)
	}
	if c != nil {
		cl := decode(t, e, layout.TypeCluster, TracingCluster, &clusterv3.Cluster{})
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != tc.GetAddress() || sa.GetPortValue() != uint32(tc.GetPort()) {
			t.Errorf("tracing cluster to %s:%d, want %s:%d", sa.GetAddress(), sa.GetPortValue(), tc.GetAddress(), tc.GetPort())
		}
		_, h2 := cl.GetTypedExtensionProtocolOptions()[httpOptionsKey]
		if h2 != (tc.GetProvider() == "opentelemetry") {
			t.Errorf("tracing cluster HTTP/2 options: %v, provider %q", h2, tc.GetProvider())
		}
	}
}

// TestTracingGolden: with MeshConfig tracing on (zipkin with a sampled
// fraction, then opentelemetry), the tracing cluster, a service listener,
// an inbound listener with IngressBackend chains, an egress listener and a
// group equal testdata/tracing.golden; every resource, every HTTP
// connection manager and its tracer pass ValidateAll; the gRPC flavour
// (its group is in the golden file too) is untraced.
func TestTracingGolden(t *testing.T) {
	var got bytes.Buffer
	for _, c := range []struct {
		name string
		tc   *meshv1.TracingSpec
	}{{"zipkin", zipkinSpec}, {"opentelemetry", otelSpec}} {
		e := tracingEngine()
		load(t, e, tracedMesh(c.tc))
		validateAll(t, e)
		checkTracing(t, e, c.tc)
		got.WriteString("##### provider " + c.name + "\n")
		got.Write(dumpIf(t, e, func(key string) bool {
			return key == "cluster envoy-tracing-cluster" || key == "listener outbound-listener:bookstore/bookstore|14001" ||
				key == "listener inbound-listener:bookstore/bookstore-v1" || key == "listener egress-listener:bookbuyer/bookbuyer|80" ||
				key == "group bookbuyer/bookbuyer"
		}))
	}
	path := filepath.Join("testdata", "tracing.golden")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("compiled output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(got.Bytes())))
	}
}

// TestTracingFollowsTheMeshConfig turns tracing on, edits it, switches the
// provider, refuses a setting the webhook would refuse and turns it off,
// each a MeshConfig edit applied to one engine (with the gRPC flavour,
// which stays untraced): after each compile every connection manager and
// group follows the MeshConfig, and the engine equals a cold compile of
// the same objects.
func TestTracingFollowsTheMeshConfig(t *testing.T) {
	e := tracingEngine()
	load(t, e, tracedMesh(nil))
	checkTracing(t, e, nil)
	steps := []struct {
		name string
		tc   *meshv1.TracingSpec
		want *meshv1.TracingSpec // what is compiled: nil when off
	}{
		{"zipkin on", zipkinSpec, zipkinSpec},
		{"collector and endpoint change", &meshv1.TracingSpec{Enable: true, Address: "zipkin.observability", Port: 9412, Endpoint: "/zipkin/api/v2/spans"},
			&meshv1.TracingSpec{Enable: true, Address: "zipkin.observability", Port: 9412, Endpoint: "/zipkin/api/v2/spans"}},
		{"opentelemetry", otelSpec, otelSpec},
		{"enabled without an address is refused: off", &meshv1.TracingSpec{Enable: true, Port: 4317, Provider: "opentelemetry"}, nil},
		{"zipkin again", zipkinSpec, zipkinSpec},
		{"off", &meshv1.TracingSpec{Enable: false, Address: "jaeger.tracing.svc.cluster.local", Port: 9411}, nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			d := apply(t, e, tracingMeshConfig(s.tc))
			checkTracing(t, e, s.want)
			cold := tracingEngine()
			load(t, cold, tracedMesh(s.tc))
			if want, got := snapshot(cold), snapshot(e); !slices.Equal(want, got) {
				t.Errorf("incremental differs from cold:\n%s", diffLists(want, got))
			}
			if s.want != nil && !slices.Contains(keys(d), "cluster "+TracingCluster) {
				t.Errorf("the compile did not write the tracing cluster: %v", keys(d))
			}
		})
	}
}
