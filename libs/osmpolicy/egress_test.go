package osmpolicy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// osmManifest is an Egress as OSM's documentation writes it.
const osmManifest = `{
  "apiVersion": "policy.openservicemesh.io/v1alpha1",
  "kind": "Egress",
  "metadata": {"name": "httpbin-80", "namespace": "curl", "uid": "u-1", "generation": 3},
  "spec": {
    "sources": [{"kind": "ServiceAccount", "name": "curl", "namespace": "curl"},
                {"kind": "ServiceAccount", "name": "gw", "namespace": "curl", "mtls": {"issuer": "osm"}}],
    "hosts": ["httpbin.org"],
    "ipAddresses": ["203.0.113.0/24"],
    "ports": [{"number": 80, "protocol": "http"}, {"number": 99999999999, "protocol": "tcp"}],
    "matches": [{"apiGroup": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup", "name": "httpbin-get"}]
  }
}`

// TestEgress: OSM's manifest reads into the contract with every field,
// the same from JSON (the webhook) and from unstructured (the watcher); an
// out-of-range port stays out of range, for the rules to reject.
func TestEgress(t *testing.T) {
	want := &meshv1.Egress{
		Meta:       &meshv1.ObjectMeta{Namespace: "curl", Name: "httpbin-80", Uid: "u-1", Generation: 3},
		ApiVersion: "policy.openservicemesh.io/v1alpha1",
		Sources: []*meshv1.EgressSource{{Kind: "ServiceAccount", Name: "curl", Namespace: "curl"},
			{Kind: "ServiceAccount", Name: "gw", Namespace: "curl", HasMtls: true}},
		Hosts:       []string{"httpbin.org"},
		IpAddresses: []string{"203.0.113.0/24"},
		Ports:       []*meshv1.EgressPort{{Number: 80, Protocol: "http"}, {Number: 2147483647, Protocol: "tcp"}},
		Matches:     []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: "httpbin-get"}},
	}
	fromJSON, err := DecodeEgress([]byte(osmManifest))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, fromJSON) {
		t.Errorf("from JSON:\n got %v\nwant %v", fromJSON, want)
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON([]byte(osmManifest)); err != nil {
		t.Fatal(err)
	}
	fromU := ParseEgress(&u)
	if !proto.Equal(fromU, fromJSON) {
		t.Errorf("unstructured and JSON differ:\n%v\n%v", fromU, fromJSON)
	}
	bad, err := DecodeEgress([]byte(`{"spec":{"ports":"80","hosts":[7]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if f := bad.GetInvalidFields(); len(f) != 2 || f[0].GetFieldPath() != "spec.hosts[0]" || f[1].GetFieldPath() != "spec.ports" {
		t.Errorf("invalid fields %v, want spec.hosts[0] and spec.ports", f)
	}
	if _, err := DecodeEgress([]byte(`{"spec":`)); err == nil {
		t.Error("truncated JSON was read")
	}
}
