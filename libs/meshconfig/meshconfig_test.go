package meshconfig

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestParse(t *testing.T) {
	obj := func(spec any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig", "spec": spec,
		}}
		u.SetNamespace("osm-system")
		u.SetName("osm-mesh-config")
		u.SetGeneration(2)
		return u
	}
	frac := 0.25
	cases := []struct {
		name string
		spec any
		want *meshv1.MeshConfig
	}{{
		name: "full",
		spec: map[string]any{
			"sidecar": map[string]any{
				"logLevel": "debug", "image": "envoy:v1", "initContainerImage": "init:v1",
				"enablePrivilegedInitContainer": true, "maxDataPlaneConnections": int64(500),
				"resources": map[string]any{
					"limits":   map[string]any{"cpu": "500m", "memory": "128Mi"},
					"requests": map[string]any{"cpu": int64(1), "memory": "0.5Gi"},
				},
			},
			"traffic": map[string]any{
				"enablePermissiveTrafficPolicyMode": true, "enableEgress": false,
				"outboundPortExclusionList":    []any{int64(6379)},
				"inboundPortExclusionList":     []any{int64(9090), int64(9091)},
				"outboundIPRangeExclusionList": []any{"10.0.0.0/8"},
			},
			"observability": map[string]any{
				"osmLogLevel": "info", "enableDebugServer": true,
				"tracing": map[string]any{"enable": true, "address": "jaeger", "port": int64(9411), "endpoint": "/api/v2/spans", "sampledFraction": "0.25", "provider": "zipkin"},
			},
			"certificate": map[string]any{"serviceCertValidityDuration": "1h30m", "trustDomain": "cluster.local"},
		},
		want: &meshv1.MeshConfig{
			Meta:       &meshv1.ObjectMeta{Namespace: "osm-system", Name: "osm-mesh-config", Generation: 2},
			ApiVersion: "config.openservicemesh.io/v1alpha1",
			Sidecar: &meshv1.SidecarSpec{LogLevel: "debug", SidecarImage: "envoy:v1", InitContainerImage: "init:v1",
				EnablePrivilegedInitContainer: true, MaxDataPlaneConnections: 500,
				Resources: &meshv1.ResourceRequirements{
					Limits:   map[string]string{"cpu": "500m", "memory": "128Mi"},
					Requests: map[string]string{"cpu": "1", "memory": "512Mi"},
				}},
			Traffic: &meshv1.TrafficSpec{EnablePermissiveTrafficPolicyMode: true,
				OutboundPortExclusionList: []int32{6379}, InboundPortExclusionList: []int32{9090, 9091},
				OutboundIpRangeExclusionList: []string{"10.0.0.0/8"}},
			Observability: &meshv1.ObservabilitySpec{OsmLogLevel: "info", EnableDebugServer: true,
				Tracing: &meshv1.TracingSpec{Enable: true, Address: "jaeger", Port: 9411, Endpoint: "/api/v2/spans", SampledFraction: &frac, Provider: "zipkin"}},
			Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(90 * time.Minute)},
		},
	}, {
		name: "unparseable values go to invalid_fields",
		spec: map[string]any{
			"sidecar":       map[string]any{"logLevel": int64(3), "resources": map[string]any{"limits": map[string]any{"cpu": "lots"}}},
			"traffic":       map[string]any{"inboundPortExclusionList": []any{"http"}},
			"observability": map[string]any{"tracing": map[string]any{"sampledFraction": "half"}},
			"certificate":   map[string]any{"serviceCertValidityDuration": "1 day"},
		},
		want: &meshv1.MeshConfig{
			Meta:          &meshv1.ObjectMeta{Namespace: "osm-system", Name: "osm-mesh-config", Generation: 2},
			ApiVersion:    "config.openservicemesh.io/v1alpha1",
			Sidecar:       &meshv1.SidecarSpec{Resources: &meshv1.ResourceRequirements{Limits: map[string]string{}}},
			Traffic:       &meshv1.TrafficSpec{},
			Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{}},
			Certificate:   &meshv1.CertificateSpec{},
			InvalidFields: []*meshv1.InvalidField{
				{FieldPath: "spec.sidecar.logLevel", Value: "3", Message: "must be a string"},
				{FieldPath: "spec.sidecar.resources.limits[cpu]", Value: "lots", Message: "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"},
				{FieldPath: "spec.traffic.inboundPortExclusionList[0]", Value: "http", Message: "must be an integer"},
				{FieldPath: "spec.observability.tracing.sampledFraction", Value: "half", Message: `strconv.ParseFloat: parsing "half": invalid syntax`},
				{FieldPath: "spec.certificate.serviceCertValidityDuration", Value: "1 day", Message: `time: unknown unit " day" in duration "1 day"`},
			},
		},
	}, {
		name: "a spec that is not an object",
		spec: []any{"sidecar"},
		want: &meshv1.MeshConfig{
			Meta:          &meshv1.ObjectMeta{Namespace: "osm-system", Name: "osm-mesh-config", Generation: 2},
			ApiVersion:    "config.openservicemesh.io/v1alpha1",
			InvalidFields: []*meshv1.InvalidField{{FieldPath: "spec", Value: "[sidecar]", Message: "must be an object"}},
		},
	}, {
		name: "empty spec",
		spec: map[string]any{},
		want: &meshv1.MeshConfig{
			Meta:       &meshv1.ObjectMeta{Namespace: "osm-system", Name: "osm-mesh-config", Generation: 2},
			ApiVersion: "config.openservicemesh.io/v1alpha1",
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, Parse(obj(c.spec)), protocmp.Transform()); d != "" {
				t.Errorf("Parse (-want +got):\n%s", d)
			}
		})
	}
}
