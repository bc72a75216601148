package inject

import (
	"strings"
	"testing"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestWithMeshConfig(t *testing.T) {
	mc := &meshv1.MeshConfig{
		Sidecar: &meshv1.SidecarSpec{
			SidecarImage: "envoyproxy/envoy:v1.37.0", LogLevel: "debug",
			Resources: &meshv1.ResourceRequirements{Limits: map[string]string{"memory": "512Mi", "cpu": "1"}},
		},
		Traffic: &meshv1.TrafficSpec{
			OutboundPortExclusionList:    []int32{6379},
			OutboundIpRangeExclusionList: []string{"10.0.0.0/8"},
		},
	}
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

	if s.PrivilegedInit {
		t.Fatal("privileged init container without enablePrivilegedInitContainer")
	}
	mc.Sidecar.EnablePrivilegedInitContainer = true
	if s, err = settings().WithMeshConfig(mc); err != nil || !s.PrivilegedInit {
		t.Fatalf("enablePrivilegedInitContainer: PrivilegedInit %t, %v", s.PrivilegedInit, err)
	}

	bad := &meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{InboundPortExclusionList: []int32{0}}}
	if _, err := settings().WithMeshConfig(bad); err == nil || !strings.Contains(err.Error(), "spec.traffic.inboundPortExclusionList[0]: port 0 is outside 1-65535") {
		t.Fatalf("bad port: %v", err)
	}
}

// TestWithMeshConfigInvalidFields: a value the MeshConfig could not read
// is an error naming it when the injector uses the field, and is ignored
// when it does not.
func TestWithMeshConfigInvalidFields(t *testing.T) {
	cases := []struct {
		path    string
		refused bool
	}{
		{"spec.sidecar.image", true},
		{"spec.sidecar", true},
		{"spec.sidecar.resources.limits[cpu]", true},
		{"spec.traffic.outboundPortExclusionList[1]", true},
		{"spec.traffic.outboundIPRangeInclusionList", true},
		{"spec.sidecar.imagePullPolicy", false},
		{"spec.sidecar.maxDataPlaneConnections", false},
		{"spec.observability.tracing.port", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			mc := &meshv1.MeshConfig{
				Sidecar:       &meshv1.SidecarSpec{SidecarImage: "envoyproxy/envoy:v1.37.0"},
				InvalidFields: []*meshv1.InvalidField{{FieldPath: tc.path, Value: "x", Message: "must be a string"}},
			}
			s, err := settings().WithMeshConfig(mc)
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), tc.path)):
				t.Fatalf("got %v, want an error naming %s", err, tc.path)
			case !tc.refused && err != nil:
				t.Fatalf("refused for a field the injector does not use: %v", err)
			case !tc.refused && s.SidecarImage != "envoyproxy/envoy:v1.37.0":
				t.Fatalf("the valid fields were not applied: %+v", s)
			}
		})
	}
}
