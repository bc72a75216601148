package osmpolicy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// osmRetry is a Retry as OSM's documentation writes it.
const osmRetry = `{
  "apiVersion": "policy.openservicemesh.io/v1alpha1",
  "kind": "Retry",
  "metadata": {"name": "retry", "namespace": "curl", "uid": "u-1", "generation": 2},
  "spec": {
    "source": {"kind": "ServiceAccount", "name": "curl", "namespace": "curl"},
    "destinations": [{"kind": "Service", "name": "httpbin", "namespace": "httpbin"}],
    "retryPolicy": {"retryOn": "5xx", "perTryTimeout": "1s", "numRetries": -5, "retryBackoffBaseInterval": "1s"}
  }
}`

// TestRetry: OSM's manifest reads into the contract with every field, the
// same from JSON (the webhook) and from unstructured (the watcher); a
// negative numRetries stays negative for the rules to reject.
func TestRetry(t *testing.T) {
	n := int64(-5)
	want := &meshv1.Retry{
		Meta:         &meshv1.ObjectMeta{Namespace: "curl", Name: "retry", Uid: "u-1", Generation: 2},
		ApiVersion:   "policy.openservicemesh.io/v1alpha1",
		Source:       &meshv1.RetrySubject{Kind: "ServiceAccount", Name: "curl", Namespace: "curl"},
		Destinations: []*meshv1.RetrySubject{{Kind: "Service", Name: "httpbin", Namespace: "httpbin"}},
		RetryPolicy:  &meshv1.RetryPolicySpec{RetryOn: "5xx", PerTryTimeout: "1s", NumRetries: &n, RetryBackoffBaseInterval: "1s"},
	}
	fromJSON, err := DecodeRetry([]byte(osmRetry))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, fromJSON) {
		t.Errorf("from JSON:\n got %v\nwant %v", fromJSON, want)
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON([]byte(osmRetry)); err != nil {
		t.Fatal(err)
	}
	if fromU := ParseRetry(&u); !proto.Equal(fromU, want) {
		t.Errorf("from unstructured:\n got %v\nwant %v", fromU, want)
	}
}

// TestRetryWrongTypes: a value of the wrong JSON type is recorded with its
// path, and the rest is still read.
func TestRetryWrongTypes(t *testing.T) {
	r, err := DecodeRetry([]byte(`{"metadata":{"name":"r"},"spec":{"source":"curl","destinations":[{"kind":"Service","name":"a"},"b"],
		"retryPolicy":{"retryOn":5,"numRetries":1.5,"perTryTimeout":"1s"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range r.GetInvalidFields() {
		paths = append(paths, f.GetFieldPath())
	}
	want := []string{"spec.source", "spec.destinations[1]", "spec.retryPolicy.retryOn", "spec.retryPolicy.numRetries"}
	if len(paths) != len(want) {
		t.Fatalf("invalid fields %v, want %v", paths, want)
	}
	for i := range want {
		if paths[i] != want[i] {
			t.Fatalf("invalid fields %v, want %v", paths, want)
		}
	}
	if r.GetDestinations()[0].GetName() != "a" || r.GetRetryPolicy().GetPerTryTimeout() != "1s" {
		t.Errorf("the valid fields were not read: %v", r)
	}
	if _, err := DecodeRetry([]byte(`[`)); err == nil {
		t.Error("bad JSON read")
	}
}
