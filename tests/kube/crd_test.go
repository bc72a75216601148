package kube_test

import (
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/tests/kube"
)

func TestCRDSchemas(t *testing.T) {
	ns := cluster.Namespace(t, "crd", nil)
	validTarget := map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": ns},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": ns}},
		"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "routes", "matches": []any{"buy"}}},
	}
	tests := []struct {
		name     string
		gvr      schema.GroupVersionResource
		kind     string
		spec     map[string]any
		badField string   // empty: the object is valid
		msg      string   // in the refusal, when set
		kept     []string // a field path the created object still holds (not pruned)
	}{
		{name: "valid TrafficTarget", gvr: kube.TrafficTargets, kind: "TrafficTarget", spec: validTarget},
		{name: "TrafficTarget destination is a string", gvr: kube.TrafficTargets, kind: "TrafficTarget",
			spec: map[string]any{"destination": "bookstore"}, badField: "spec.destination"},
		{name: "TrafficTarget without destination", gvr: kube.TrafficTargets, kind: "TrafficTarget",
			spec: map[string]any{"sources": validTarget["sources"]}, badField: "spec.destination"},
		{name: "TrafficTarget destination without name", gvr: kube.TrafficTargets, kind: "TrafficTarget",
			spec: map[string]any{"destination": map[string]any{"kind": "ServiceAccount"}}, badField: "spec.destination.name"},
		{name: "TrafficTarget rule of unknown kind", gvr: kube.TrafficTargets, kind: "TrafficTarget",
			spec:     map[string]any{"destination": validTarget["destination"], "rules": []any{map[string]any{"kind": "GRPCRoute", "name": "r"}}},
			badField: "spec.rules[0].kind"},
		{name: "valid HTTPRouteGroup", gvr: kube.HTTPRouteGroups, kind: "HTTPRouteGroup", spec: map[string]any{
			"matches": []any{map[string]any{"name": "buy", "methods": []any{"GET", "POST"}, "pathRegex": "/buy.*",
				"headers": []any{map[string]any{"user-agent": ".*Mozilla.*"}}}},
		}},
		{name: "HTTPRouteGroup header entry with two headers", gvr: kube.HTTPRouteGroups, kind: "HTTPRouteGroup", spec: map[string]any{
			"matches": []any{map[string]any{"name": "buy", "headers": []any{map[string]any{"a": "1", "b": "2"}}}},
		}, badField: "spec.matches[0].headers[0]"},
		{name: "HTTPRouteGroup unknown method", gvr: kube.HTTPRouteGroups, kind: "HTTPRouteGroup", spec: map[string]any{
			"matches": []any{map[string]any{"name": "buy", "methods": []any{"FETCH"}}},
		}, badField: "spec.matches[0].methods[0]"},
		{name: "valid TCPRoute", gvr: kube.TCPRoutes, kind: "TCPRoute", spec: map[string]any{
			"matches": map[string]any{"name": "db", "ports": []any{int64(5432)}},
		}},
		{name: "TCPRoute port out of range", gvr: kube.TCPRoutes, kind: "TCPRoute", spec: map[string]any{
			"matches": map[string]any{"ports": []any{int64(70000)}},
		}, badField: "spec.matches.ports[0]"},
		{name: "valid TrafficSplit", gvr: kube.TrafficSplits, kind: "TrafficSplit", spec: map[string]any{
			"service":  "bookstore",
			"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(90)}, map[string]any{"service": "bookstore-v2", "weight": int64(10)}},
		}},
		{name: "TrafficSplit weight is a string", gvr: kube.TrafficSplits, kind: "TrafficSplit", spec: map[string]any{
			"service":  "bookstore",
			"backends": []any{map[string]any{"service": "bookstore-v1", "weight": "90"}},
		}, badField: "spec.backends[0].weight"},
		// The CEL rules (x-kubernetes-validations) of the structural
		// policy rules.
		{name: "TrafficSplit backend listed twice", gvr: kube.TrafficSplits, kind: "TrafficSplit", spec: map[string]any{
			"service":  "bookstore",
			"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(1)}, map[string]any{"service": "bookstore-v1", "weight": int64(2)}},
		}, badField: "spec.backends", msg: "a backend service is listed twice"},
		{name: "TrafficSplit without its apex service", gvr: kube.TrafficSplits, kind: "TrafficSplit", spec: map[string]any{
			"service": "", "backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(1)}},
		}, badField: "spec.service"},
		{name: "HTTPRouteGroup match name used twice", gvr: kube.HTTPRouteGroups, kind: "HTTPRouteGroup", spec: map[string]any{
			"matches": []any{map[string]any{"name": "buy", "pathRegex": "/a"}, map[string]any{"name": "buy", "pathRegex": "/b"}},
		}, badField: "spec.matches", msg: "a match name is used twice"},
		{name: "HTTPRouteGroup match without a name", gvr: kube.HTTPRouteGroups, kind: "HTTPRouteGroup", spec: map[string]any{
			"matches": []any{map[string]any{"pathRegex": "/a"}},
		}, badField: "spec.matches[0].name"},
		{name: "valid MeshConfig", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"sidecar": map[string]any{"image": "envoyproxy/envoy:v1.31", "logLevel": "error",
				"resources": map[string]any{"limits": map[string]any{"cpu": "500m", "memory": int64(134217728)}}},
			"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": true,
				"outboundPortExclusionList":    []any{int64(6379)},
				"outboundIPRangeExclusionList": []any{"10.0.0.0/8", "fd00::/8"}},
			"certificate": map[string]any{"serviceCertValidityDuration": "24h"},
		}},
		{name: "MeshConfig exclusion CIDR is not a CIDR", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"traffic": map[string]any{"outboundIPRangeExclusionList": []any{"10.0.0.300/8"}},
		}, badField: "spec.traffic.outboundIPRangeExclusionList[0]"},
		{name: "MeshConfig permissive mode is a string", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": "yes"},
		}, badField: "spec.traffic.enablePermissiveTrafficPolicyMode"},
		{name: "MeshConfig validity is not a duration", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"certificate": map[string]any{"serviceCertValidityDuration": "one day"},
		}, badField: "spec.certificate.serviceCertValidityDuration"},
		{name: "valid MeshConfig tracing", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"observability": map[string]any{"tracing": map[string]any{"enable": true, "provider": "opentelemetry",
				"address": "otel-collector.tracing", "port": int64(4317), "sampledFraction": 0.25}},
		}, kept: []string{"spec", "observability", "tracing", "sampledFraction"}},
		{name: "MeshConfig tracing enabled without an address", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"observability": map[string]any{"tracing": map[string]any{"enable": true, "port": int64(9411)}},
		}, badField: "spec.observability.tracing", msg: "tracing enabled needs a collector address and port"},
		{name: "MeshConfig opentelemetry tracing with an endpoint", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"observability": map[string]any{"tracing": map[string]any{"provider": "opentelemetry", "endpoint": "/v1/traces"}},
		}, badField: "spec.observability.tracing", msg: "has no endpoint"},
		{name: "MeshConfig tracing provider unknown", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"observability": map[string]any{"tracing": map[string]any{"provider": "jaeger"}},
		}, badField: "spec.observability.tracing.provider"},
		{name: "MeshConfig sampled fraction above 1", gvr: kube.MeshConfigs, kind: "MeshConfig", spec: map[string]any{
			"observability": map[string]any{"tracing": map[string]any{"sampledFraction": 1.5}},
		}, badField: "spec.observability.tracing.sampledFraction"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": tt.gvr.GroupVersion().String(),
				"kind":       tt.kind,
				"metadata":   map[string]any{"name": "obj-" + string(rune('a'+i))},
				"spec":       tt.spec,
			}}
			got, err := cluster.Dynamic().Resource(tt.gvr).Namespace(ns).Create(t.Context(), obj, metav1.CreateOptions{})
			if tt.badField == "" {
				if err != nil {
					t.Fatalf("valid %s rejected: %v", tt.kind, err)
				}
				if _, ok, _ := unstructured.NestedFieldNoCopy(got.Object, tt.kept...); len(tt.kept) > 0 && !ok {
					t.Errorf("%s pruned by the apiserver: the CRD schema lacks it", strings.Join(tt.kept, "."))
				}
				return
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: got error %v, want Invalid naming %s", err, tt.badField)
			}
			if !invalidField(err, tt.badField) {
				t.Errorf("Invalid error does not name field %s: %v", tt.badField, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Invalid error does not say %q: %v", tt.msg, err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

// invalidField reports whether an Invalid error has a cause for field.
func invalidField(err error, field string) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == field || strings.HasPrefix(c.Field, field+".") {
			return true
		}
	}
	return false
}
