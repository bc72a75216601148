package compile

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshconfig/tracing"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TracingCluster is the cluster of the trace collector, MeshConfig's
// spec.observability.tracing address:port. While tracing is on it exists
// and every Envoy proxy group lists it; the tracing config of every HTTP
// connection manager the Envoy flavour writes names it:
//
//	cluster   envoy-tracing-cluster  STRICT_DNS to address:port; HTTP/2 for
//	                                 the opentelemetry provider (OTLP over gRPC)
//
// The gRPC flavour is not traced: proxyless gRPC has no tracing config in
// xDS (its tracing is the application's own).
const TracingCluster = "envoy-tracing-cluster"

// tracingConnectTimeout bounds the connection to the collector.
const tracingConnectTimeout = 5 * time.Second

// Envoy's names of the tracers.
const (
	zipkinTracer        = "envoy.tracers.zipkin"
	openTelemetryTracer = "envoy.tracers.opentelemetry"
)

// compileTracing follows the MeshConfig's spec.observability.tracing: it
// builds the HTTP connection managers' tracing config once per MeshConfig
// version (e.tracing, which every builder of the compile reuses, so tracing
// costs no per-listener work) and puts or drops the TracingCluster. A
// MeshConfig change recompiles everything (dirty.everything), so every
// connection manager and group is rebuilt with it; Compile calls this
// only then, before the builders. Settings libs/meshconfig/tracing
// refuses (the webhook away) turn tracing off rather than reach Envoy.
func (e *Engine) compileTracing(d *Delta) {
	e.tracing = nil
	k := resKey{layout.TypeCluster, TracingCluster}
	spec := e.m.MeshConfig().GetObservability().GetTracing()
	if !tracing.Active(spec) {
		e.res.drop(k, d)
		return
	}
	// A failed build (a compiler bug) is reported and traces nothing: no
	// old collector's cluster is kept.
	tr, err := buildTracing(spec)
	var c *Resource
	if err == nil {
		c, err = buildTracingCluster(spec)
	}
	if err != nil {
		d.Invalid = append(d.Invalid, fmt.Errorf("tracing: %w", err))
		e.res.drop(k, d)
		return
	}
	e.res.record(k, c, d)
	e.tracing = tr
}

// tracingClusters is the TracingCluster while tracing is on, for an
// Envoy proxy group's clusters.
func (e *Engine) tracingClusters() []string {
	if e.tracing == nil {
		return nil
	}
	return []string{TracingCluster}
}

// buildTracing is the HTTP connection managers' tracing config of spec
// (tracing.Active): the provider's tracer sending to the TracingCluster,
// and random sampling of sampledFraction (unset: Envoy's default, every
// request).
func buildTracing(spec *meshv1.TracingSpec) (*hcmv3.HttpConnectionManager_Tracing, error) {
	var name string
	var cfg *anypb.Any
	var err error
	switch tracing.Provider(spec) {
	case tracing.OpenTelemetry:
		name = openTelemetryTracer
		cfg, err = typed(&tracev3.OpenTelemetryConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: TracingCluster,
				Authority:   spec.GetAddress(),
			}}},
		})
	default:
		name = zipkinTracer
		ep := spec.GetEndpoint()
		if ep == "" {
			ep = tracing.DefaultZipkinEndpoint
		}
		cfg, err = typed(&tracev3.ZipkinConfig{
			CollectorCluster:         TracingCluster,
			CollectorEndpoint:        ep,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			CollectorHostname:        spec.GetAddress(),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	tr := &hcmv3.HttpConnectionManager_Tracing{
		Provider: &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg}},
	}
	if spec.SampledFraction != nil {
		tr.RandomSampling = &typev3.Percent{Value: spec.GetSampledFraction() * 100}
	}
	if err := tr.ValidateAll(); err != nil {
		return nil, err
	}
	return tr, nil
}

// buildTracingCluster is the TracingCluster: STRICT_DNS to the collector,
// HTTP/2 for OTLP over gRPC.
func buildTracingCluster(spec *meshv1.TracingSpec) (*Resource, error) {
	c := &clusterv3.Cluster{
		Name:                 TracingCluster,
		AltStatName:          TracingCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(tracingConnectTimeout),
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: TracingCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(spec.GetAddress(), spec.GetPort())}},
			}}}},
		},
	}
	if tracing.Provider(spec) == tracing.OpenTelemetry {
		opts, err := typed(&httpoptsv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", TracingCluster, err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsKey: opts}
	}
	return newResource(layout.TypeCluster, TracingCluster, c)
}
