package osmpolicy

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// utsManifest is an UpstreamTrafficSetting as OSM's documentation writes
// one (circuit breaking and rate limiting), with this mesh's additions.
const utsManifest = `{
  "apiVersion": "policy.openservicemesh.io/v1alpha1",
  "kind": "UpstreamTrafficSetting",
  "metadata": {"name": "http-circuit-breaking", "namespace": "bookstore", "uid": "u-1", "generation": 2},
  "spec": {
    "host": "bookstore.bookstore.svc.cluster.local",
    "connectionSettings": {
      "tcp": {"maxConnections": 100, "connectTimeout": "5s"},
      "http": {"maxRequests": 100, "maxRequestsPerConnection": 10, "maxPendingRequests": 5, "maxRetries": 3}
    },
    "outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "10s", "maxEjectionPercent": 100,
      "failurePercentage": {"threshold": 50, "minimumHosts": 2, "requestVolume": 10, "enforcementPercentage": 90}},
    "rateLimit": {"local": {
      "tcp": {"connections": 1, "unit": "minute", "burst": 2},
      "http": {"requests": 3, "unit": "second", "responseStatusCode": 429, "responseHeadersToAdd": [{"name": "hello", "value": "world"}]}
    }},
    "httpRoutes": [{"path": "/books-bought", "rateLimit": {"local": {"requests": 1, "unit": "minute"}}, "timeout": "2s"}]
  }
}`

var utsWant = `{
  "meta": {"namespace": "bookstore", "name": "http-circuit-breaking", "uid": "u-1", "generation": "2"},
  "apiVersion": "policy.openservicemesh.io/v1alpha1",
  "host": "bookstore.bookstore.svc.cluster.local",
  "connectionSettings": {
    "tcp": {"maxConnections": "100", "connectTimeout": "5s"},
    "http": {"maxRequests": "100", "maxRequestsPerConnection": "10", "maxPendingRequests": "5", "maxRetries": "3"}
  },
  "outlierDetection": {"consecutive5xxErrors": "2", "interval": "1s", "baseEjectionTime": "10s", "maxEjectionPercent": "100",
    "failurePercentage": {"threshold": "50", "minimumHosts": "2", "requestVolume": "10", "enforcementPercentage": "90"}},
  "rateLimit": {"local": {
    "tcp": {"connections": "1", "unit": "minute", "burst": "2"},
    "http": {"requests": "3", "unit": "second", "responseStatusCode": "429", "responseHeadersToAdd": [{"name": "hello", "value": "world"}]}
  }},
  "httpRoutes": [{"path": "/books-bought", "rateLimit": {"local": {"requests": "1", "unit": "minute"}}, "timeout": "2s"}]
}`

// TestReadsOSMManifest: the webhook's JSON and the watcher's unstructured
// read the same contract message, every field in place.
func TestReadsOSMManifest(t *testing.T) {
	exp := &meshv1.UpstreamTrafficSetting{}
	if err := protojson.Unmarshal([]byte(utsWant), exp); err != nil {
		t.Fatal(err)
	}
	fromJSON, err := DecodeUpstreamTrafficSetting([]byte(utsManifest))
	if err != nil {
		t.Fatal(err)
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON([]byte(utsManifest)); err != nil {
		t.Fatal(err)
	}
	fromUnstructured := ParseUpstreamTrafficSetting(&u)
	for name, got := range map[string]*meshv1.UpstreamTrafficSetting{"json": fromJSON, "unstructured": fromUnstructured} {
		if !proto.Equal(got, exp) {
			t.Errorf("%s: got %v\nwant %v", name, got, exp)
		}
	}
}

// TestUnreadableSpec: a value of the wrong JSON type keeps the object's
// metadata and names the problem.
func TestUnreadableSpec(t *testing.T) {
	var u unstructured.Unstructured
	u.SetUnstructuredContent(map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "bad", "namespace": "ns"},
		"spec":     map[string]any{"host": "svc", "connectionSettings": map[string]any{"tcp": map[string]any{"maxConnections": "many"}}},
	})
	got := ParseUpstreamTrafficSetting(&u)
	if got.GetMeta().GetName() != "bad" || len(got.GetInvalidFields()) != 1 || got.GetInvalidFields()[0].GetFieldPath() != "spec" {
		t.Errorf("got %v", got)
	}
	if _, err := DecodeUpstreamTrafficSetting([]byte(`{"spec":{"host":1}}`)); err == nil {
		t.Error("a number host decoded")
	}
}
