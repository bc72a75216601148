package inject

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestWithMeshConfig(t *testing.T) {
	mc := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"sidecar": map[string]any{
				"image": "envoyproxy/envoy:v1.37.0", "logLevel": "debug",
				"resources": map[string]any{"limits": map[string]any{"memory": "512Mi", "cpu": int64(1)}},
			},
			"traffic": map[string]any{
				"outboundPortExclusionList":    []any{int64(6379)},
				"outboundIPRangeExclusionList": []any{"10.0.0.0/8"},
			},
		},
	}}
	s, err := settings().WithMeshConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	if s.SidecarImage != "envoyproxy/envoy:v1.37.0" || s.LogLevel != "debug" || s.InitImage != "openservicemesh/init:v1" {
		t.Fatalf("images/log level: %+v", s)
	}
	if q := s.Resources.Limits["memory"]; q.String() != "512Mi" {
		t.Fatalf("memory limit %s", q.String())
	}
	if len(s.OutboundPortExclusions) != 1 || s.OutboundPortExclusions[0] != 6379 || s.OutboundIPRangeExclusions[0] != "10.0.0.0/8" {
		t.Fatalf("exclusions %+v", s)
	}

	bad := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"traffic": map[string]any{"inboundPortExclusionList": []any{int64(0)}}}}}
	if _, err := settings().WithMeshConfig(bad); err == nil || !strings.Contains(err.Error(), "spec.traffic.inboundPortExclusionList.0") {
		t.Fatalf("bad port: %v", err)
	}
}
