package proxyless

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/netns"
	"github.com/openservicemesh/osm/tests/stack"
)

// The Retry test's mesh: its own namespaces, monitored by a mesh of its
// own, so that it runs alone or after TestProxylessGRPCBookstore.
const (
	retryMesh     = "osm-retry"
	retryStoreNS  = "retry-store"
	retryBuyerNS  = "retry-buyer"
	retryTarget   = "xds:///flaky." + retryStoreNS + ":14001"
	failedAttempt = "attempt 1 failed on purpose"
)

// retryMeshObjects creates the Retry test's objects: the control-plane
// namespace and MeshConfig unless an earlier test made them, the two
// namespaces in the mesh retryMesh, the Service flaky on a gRPC port, a
// route group matching bookstore.Books/Get as gRPC calls it, and a
// TrafficTarget letting ServiceAccount buyer call flaky's Get.
func retryMeshObjects(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	controlPlaneObjects(t)
	for _, ns := range []string{retryStoreNS, retryBuyerNS} {
		if _, err := cluster.CreateNamespace(ctx, ns, map[string]string{layout.LabelMonitoredBy: retryMesh}); err != nil {
			t.Fatal(err)
		}
	}
	service(t, retryStoreNS, "flaky", map[string]string{"app": "flaky"})
	create(t, kube.HTTPRouteGroups, retryStoreNS, getRoutes("flaky-routes"))
	create(t, kube.TrafficTargets, retryStoreNS, getTarget("buyer-access-flaky", "flaky", retryStoreNS, "flaky-routes", "buyer", retryBuyerNS))
}

// controlPlaneObjects creates the control-plane namespace and the
// MeshConfig (SMI mode) unless an earlier test made them.
func controlPlaneObjects(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	if _, err := cluster.CreateNamespace(ctx, "osm-system", nil); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cluster.Dynamic().Resource(kube.MeshConfigs).Namespace("osm-system").Get(ctx, meshConfig, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		create(t, kube.MeshConfigs, "osm-system", map[string]any{
			"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
			"metadata": map[string]any{"name": meshConfig},
			"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": false}},
		})
	} else if err != nil {
		t.Fatal(err)
	}
}

// getRoutes is the HTTPRouteGroup name matching bookstore.Books/Get as
// gRPC calls it (match "get").
func getRoutes(name string) map[string]any {
	return map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "get", "pathRegex": "/bookstore.Books/Get", "methods": []any{"POST"}},
		}},
	}
}

// getTarget is the TrafficTarget name letting ServiceAccount srcNS/src
// call the Get match of routes at ServiceAccount ns/dest.
func getTarget(name, dest, ns, routes, src, srcNS string) map[string]any {
	return map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": dest, "namespace": ns},
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": routes, "matches": []any{"get"}}},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": src, "namespace": srcNS}},
		},
	}
}

// flakyRetry is the Retry of ServiceAccount buyer's calls to flaky: on
// UNAVAILABLE, 3 retries, 10 ms apart at first (perTryTimeout, which the
// CRD requires, gRPC ignores).
func flakyRetry() map[string]any {
	return map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry",
		"metadata": map[string]any{"name": "buyer-retry"},
		"spec": map[string]any{
			"source":       map[string]any{"kind": "ServiceAccount", "name": "buyer", "namespace": retryBuyerNS},
			"destinations": []any{map[string]any{"kind": "Service", "name": "flaky", "namespace": retryStoreNS}},
			"retryPolicy": map[string]any{"retryOn": "unavailable", "perTryTimeout": "1s", "numRetries": int64(3),
				"retryBackoffBaseInterval": "10ms"},
		},
	}
}

// lastN is a waitCalls condition: the last n calls all satisfy ok.
func lastN(n int, ok func(call) bool) func([]call) int {
	return func(cs []call) int {
		if len(cs) < n {
			return -1
		}
		for _, c := range cs[len(cs)-n:] {
			if !ok(c) {
				return -1
			}
		}
		return len(cs)
	}
}

// TestProxylessGRPCRetry: a Retry carried by real gRPC-Go xDS clients and
// servers as pods. The server flaky answers UNAVAILABLE to the first two
// attempts of every call (bookstore-grpc serve --fail-attempts 2). Without
// a Retry, ServiceAccount buyer's calls through the mesh reach it and fail
// at their first attempt; with a Retry from buyer to flaky (retryOn
// unavailable, numRetries 3) every call succeeds at its third attempt;
// with the Retry deleted the calls fail at their first attempt again.
func TestProxylessGRPCRetry(t *testing.T) {
	start := time.Now()
	netns.Require(t)
	retryMeshObjects(t)
	edges := newEdgeService(t)
	m := startMeshNamed(t, edges.Addr(), "retry", retryMesh)
	edges.setEndpoints(m.Addr(stack.Edge))

	k := cluster.Kubelet("retry-node", "zone-a")
	flaky := readyPod(t, k, retryStoreNS, "flaky-0", "flaky", ipFlaky, map[string]string{"app": "flaky"})
	buyer := readyPod(t, k, retryBuyerNS, "buyer-0", "buyer", ipRetryBuyer, map[string]string{"app": "buyer"})
	flaky.serve(t, fmt.Sprintf("%s:%d", ipFlaky, storePort), "v1", "--fail-attempts", "2")

	calls := &callLog{}
	buyer.run(t, calls, "call", "--target", retryTarget, "--methods", "Get", "--rate", "50", "--timeout", "1s", "--json", "--report", "0")
	failedFirst := func(c call) bool { return c.Code == "Unavailable" && strings.HasPrefix(c.Error, failedAttempt) }

	// Without a Retry: the calls reach flaky (its refusal is the error)
	// and are not retried. The first calls may fail otherwise while the
	// client gets its configuration; none may succeed.
	waitCalls(t, calls, 0, 30*time.Second, "20 calls failing at their first attempt without a Retry", lastN(20, failedFirst))
	for _, c := range calls.from(0) {
		if c.Code == "OK" {
			t.Fatalf("a call succeeded without a Retry: %+v", c)
		}
	}
	t.Logf("without a Retry: %v; e.g. %q", count(calls.from(0)), calls.from(0)[calls.len()-1].Error)

	// With the Retry every call succeeds at its third attempt.
	t0, mark := time.Now(), calls.len()
	create(t, osmpolicy.RetryGVR, retryBuyerNS, flakyRetry())
	first := waitCalls(t, calls, mark, 10*time.Second, "a call served with the Retry", func(cs []call) int {
		for i, c := range cs {
			if c.Code == "OK" {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("Retry created: the first call served %s after the apply", calls0(calls, mark, first).at().Sub(t0).Round(time.Millisecond))
	settled := calls.len()
	waitCalls(t, calls, settled, 10*time.Second, "20 calls with the Retry", atLeast(20))
	for _, c := range calls.from(settled)[:20] {
		if c.Code != "OK" || c.Attempt != 3 || c.Backend != "v1" || c.Caller != buyer.id.String() {
			t.Errorf("with the Retry: %+v, want served at attempt 3 by v1 to %s", c, buyer.id)
		}
	}

	// With the Retry deleted the calls fail at their first attempt again.
	t0, mark = time.Now(), calls.len()
	if err := cluster.Dynamic().Resource(osmpolicy.RetryGVR).Namespace(retryBuyerNS).Delete(context.Background(), "buyer-retry", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	back := waitCalls(t, calls, mark, 10*time.Second, "a call failing with the Retry deleted", func(cs []call) int {
		for i, c := range cs {
			if failedFirst(c) {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("Retry deleted: the first call failing at its first attempt %s after the delete", calls0(calls, mark, back).at().Sub(t0).Round(time.Millisecond))
	waitCalls(t, calls, calls.len(), 10*time.Second, "20 calls failing at their first attempt after the delete", lastN(20, failedFirst))

	if n := nacks(t, m); n != 0 {
		t.Errorf("the edge counted %v NACKs", n)
	}
	t.Logf("TestProxylessGRPCRetry took %s", time.Since(start).Round(time.Millisecond))
}
