package osmpolicy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// osmIngressManifest is an IngressBackend as OSM's ingress guide writes
// it, with an https backend added.
const osmIngressManifest = `{
  "apiVersion": "policy.openservicemesh.io/v1alpha1",
  "kind": "IngressBackend",
  "metadata": {"name": "httpbin", "namespace": "httpbin", "uid": "u-2", "generation": 2},
  "spec": {
    "backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "http"}},
                 {"name": "secure", "port": {"number": 8443, "protocol": "https"},
                  "tls": {"skipClientCertValidation": true, "sniHosts": ["secure.httpbin.svc.cluster.local"]}},
                 {"name": "far", "port": {"number": 99999999999, "protocol": "http"}}],
    "sources": [{"kind": "Service", "name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
                {"kind": "IPRange", "name": "10.0.0.0/8"},
                {"kind": "AuthenticatedPrincipal", "name": "ingress-nginx.ingress-nginx.cluster.local"}],
    "matches": [{"apiGroup": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup", "name": "get-only"}]
  }
}`

// TestIngressBackend: OSM's manifest reads into the contract with every
// field, the same from JSON (the webhook) and from unstructured (the
// watcher); values of the wrong type are listed with their paths.
func TestIngressBackend(t *testing.T) {
	want := &meshv1.IngressBackend{
		Meta:       &meshv1.ObjectMeta{Namespace: "httpbin", Name: "httpbin", Uid: "u-2", Generation: 2},
		ApiVersion: "policy.openservicemesh.io/v1alpha1",
		Backends: []*meshv1.IngressBackendBackend{
			{Name: "httpbin", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "http"}},
			{Name: "secure", Port: &meshv1.IngressBackendPort{Number: 8443, Protocol: "https"},
				Tls: &meshv1.IngressBackendTLS{SkipClientCertValidation: true, SniHosts: []string{"secure.httpbin.svc.cluster.local"}}},
			{Name: "far", Port: &meshv1.IngressBackendPort{Number: 2147483647, Protocol: "http"}},
		},
		Sources: []*meshv1.IngressSource{
			{Kind: "Service", Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
			{Kind: "IPRange", Name: "10.0.0.0/8"},
			{Kind: "AuthenticatedPrincipal", Name: "ingress-nginx.ingress-nginx.cluster.local"},
		},
		Matches: []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: "get-only"}},
	}
	fromJSON, err := DecodeIngressBackend([]byte(osmIngressManifest))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, fromJSON) {
		t.Errorf("from JSON:\n got %v\nwant %v", fromJSON, want)
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON([]byte(osmIngressManifest)); err != nil {
		t.Fatal(err)
	}
	if fromU := ParseIngressBackend(&u); !proto.Equal(fromU, fromJSON) {
		t.Errorf("unstructured and JSON differ:\n%v\n%v", fromU, fromJSON)
	}
	bad, err := DecodeIngressBackend([]byte(`{"spec":{"backends":[{"name":"a","port":{"number":"80"},"tls":{"skipClientCertValidation":"yes"}}],"sources":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range bad.GetInvalidFields() {
		paths = append(paths, f.GetFieldPath())
	}
	wantPaths := []string{"spec.backends[0].port.number", "spec.backends[0].tls.skipClientCertValidation", "spec.sources"}
	if len(paths) != len(wantPaths) {
		t.Fatalf("invalid fields %v, want %v", paths, wantPaths)
	}
	for i := range paths {
		if paths[i] != wantPaths[i] {
			t.Errorf("invalid fields %v, want %v", paths, wantPaths)
		}
	}
	if _, err := DecodeIngressBackend([]byte(`{"spec":`)); err == nil {
		t.Error("truncated JSON was read")
	}
}
