package proxyless

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/netns"
	"github.com/openservicemesh/osm/tests/stack"
)

// The outlier detection test's mesh: its own namespaces, monitored by a
// mesh of its own, so that it runs alone or after the other tests.
const (
	outlierMesh    = "osm-outlier"
	outlierStoreNS = "outlier-store"
	outlierBuyerNS = "outlier-buyer"
	outlierTarget  = "xds:///store." + outlierStoreNS + ":14001"
)

// storeConsecutive is the UpstreamTrafficSetting of Service store with
// consecutive 5xx ejection only (2 in a row), which gRPC-Go does not have:
// each second, an ejection for a minute, at most half of the endpoints.
func storeConsecutive() map[string]any {
	return map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "store"},
		"spec": map[string]any{
			"host": "store." + outlierStoreNS + ".svc.cluster.local",
			"outlierDetection": map[string]any{
				"consecutive5xxErrors": int64(2), "interval": "1s", "baseEjectionTime": "60s", "maxEjectionPercent": int64(50),
			},
		},
	}
}

// failurePercentagePatch adds to storeConsecutive failure-percentage
// ejection: an endpoint that failed half of its calls or more in the
// interval, of 10 at least, while both have had 10.
const failurePercentagePatch = `{"spec":{"outlierDetection":{"failurePercentage":{"threshold":50,"minimumHosts":2,"requestVolume":10}}}}`

// warningEvent waits for the smi-watcher's Warning Event reason on
// UpstreamTrafficSetting store whose message names field.
func warningEvent(t *testing.T, reason, field string) {
	t.Helper()
	prefix := "UpstreamTrafficSetting " + outlierStoreNS + "/store accepted with a warning: " + field + ": "
	err := stack.Eventually(t.Context(), 30*time.Second, func() error {
		list, err := cluster.Clientset().CoreV1().Events(outlierStoreNS).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		var seen []string
		for _, ev := range list.Items {
			if ev.InvolvedObject.Kind != "UpstreamTrafficSetting" || ev.InvolvedObject.Name != "store" {
				continue
			}
			if ev.Type == "Warning" && ev.Reason == reason && strings.HasPrefix(ev.Message, prefix) {
				return nil
			}
			seen = append(seen, ev.Reason+": "+ev.Message)
		}
		return fmt.Errorf("events %v", seen)
	})
	if err != nil {
		t.Fatalf("waiting for a Warning Event %s %q: %v", reason, prefix, err)
	}
}

// TestProxylessGRPCOutlierDetection: failure-percentage outlier detection
// (UpstreamTrafficSetting spec.outlierDetection.failurePercentage) carried
// by real gRPC-Go xDS clients and servers as pods, through the whole stack.
// Service store has two pods of ServiceAccount store: good answers every
// call, bad refuses every one (bookstore-grpc serve --fail-attempts, no
// Retry). Without a setting, buyer's calls are spread over both and a
// share keeps failing; so they do with a setting of consecutive5xxErrors
// only, which gRPC-Go does not have, accepted with a Warning Event
// (OutlierDetectionDoesNothingForProxylessGRPC); with failurePercentage
// added (a Warning Event Consecutive5xxIgnoredByProxylessGRPC) bad is
// ejected within an interval or two and every call is served by good;
// with the setting deleted, bad is back and calls fail again.
func TestProxylessGRPCOutlierDetection(t *testing.T) {
	start := time.Now()
	netns.Require(t)
	ctx := t.Context()
	controlPlaneObjects(t)
	for _, ns := range []string{outlierStoreNS, outlierBuyerNS} {
		if _, err := cluster.CreateNamespace(ctx, ns, map[string]string{layout.LabelMonitoredBy: outlierMesh}); err != nil {
			t.Fatal(err)
		}
	}
	service(t, outlierStoreNS, "store", map[string]string{"app": "store"})
	create(t, kube.HTTPRouteGroups, outlierStoreNS, getRoutes("store-routes"))
	create(t, kube.TrafficTargets, outlierStoreNS, getTarget("buyer-access-store", "store", outlierStoreNS, "store-routes", "buyer", outlierBuyerNS))

	edges := newEdgeService(t)
	m := startMeshNamed(t, edges.Addr(), "outlier", outlierMesh)
	edges.setEndpoints(m.Addr(stack.Edge))

	k := cluster.Kubelet("outlier-node", "zone-a")
	good := readyPod(t, k, outlierStoreNS, "good-0", "store", ipOutlierGood, map[string]string{"app": "store"})
	bad := readyPod(t, k, outlierStoreNS, "bad-0", "store", ipOutlierBad, map[string]string{"app": "store"})
	buyer := readyPod(t, k, outlierBuyerNS, "buyer-0", "buyer", ipOutlierBuyer, map[string]string{"app": "buyer"})
	good.serve(t, fmt.Sprintf("%s:%d", ipOutlierGood, storePort), "good")
	bad.serve(t, fmt.Sprintf("%s:%d", ipOutlierBad, storePort), "bad", "--fail-attempts", "1000000")

	calls := &callLog{}
	buyer.run(t, calls, "call", "--target", outlierTarget, "--methods", "Get", "--rate", "50", "--timeout", "1s", "--json", "--report", "0")
	refused := func(c call) bool { return c.Code == "Unavailable" && strings.HasPrefix(c.Error, failedAttempt) }
	served := func(c call) bool { return c.Code == "OK" && c.Backend == "good" }
	// both is a waitCalls condition: among the last n calls some are
	// served by good and some refused by bad.
	both := func(n int) func([]call) int {
		return func(cs []call) int {
			if len(cs) < n {
				return -1
			}
			var ok, failed int
			for _, c := range cs[len(cs)-n:] {
				switch {
				case served(c):
					ok++
				case refused(c):
					failed++
				}
			}
			if ok == 0 || failed == 0 || ok+failed != n {
				return -1
			}
			return len(cs)
		}
	}

	// Without a setting the calls go to both pods and bad's keep failing.
	waitCalls(t, calls, 0, 60*time.Second, "100 calls to both pods, bad's refused, without a setting", both(100))
	mark := calls.len()
	waitCalls(t, calls, mark, 30*time.Second, "100 more calls", atLeast(100))
	failed := 0
	for _, c := range calls.from(mark)[:100] {
		if refused(c) {
			failed++
		}
	}
	t.Logf("without a setting: %v", count(calls.from(mark)[:100]))
	if failed == 0 {
		t.Fatalf("without a setting no call of 100 was refused: %v", count(calls.from(mark)[:100]))
	}

	// With consecutive 5xx only, which gRPC-Go does not have, the setting
	// is accepted with a warning and bad is not ejected.
	create(t, osmpolicy.UpstreamTrafficSettingGVR, outlierStoreNS, storeConsecutive())
	warningEvent(t, "OutlierDetectionDoesNothingForProxylessGRPC", "spec.outlierDetection.consecutive5xxErrors")
	mark = calls.len()
	waitCalls(t, calls, mark, 30*time.Second, "200 calls with consecutive5xxErrors only", atLeast(200))
	failed = 0
	for _, c := range calls.from(mark)[:200] {
		if refused(c) {
			failed++
		}
	}
	t.Logf("with consecutive5xxErrors only: %v", count(calls.from(mark)[:200]))
	if failed == 0 {
		t.Fatalf("with consecutive5xxErrors only no call of 200 was refused: %v", count(calls.from(mark)[:200]))
	}

	// With failurePercentage bad is ejected: the calls all reach good.
	t0, mark := time.Now(), calls.len()
	patch(t, osmpolicy.UpstreamTrafficSettingGVR, outlierStoreNS, "store", failurePercentagePatch)
	settled := waitCalls(t, calls, mark, 30*time.Second, "100 calls in a row served by good with failurePercentage", lastN(100, served))
	t.Logf("failurePercentage added: 100 calls in a row served by good %s after the apply (%d calls after it: %v)", time.Since(t0).Round(time.Millisecond), settled, count(calls.from(mark)[:settled]))
	warningEvent(t, "Consecutive5xxIgnoredByProxylessGRPC", "spec.outlierDetection.consecutive5xxErrors")
	mark = calls.len()
	waitCalls(t, calls, mark, 30*time.Second, "200 more calls with failurePercentage", atLeast(200))
	for _, c := range calls.from(mark)[:200] {
		if !served(c) {
			t.Errorf("with failurePercentage: %+v, want served by good", c)
		}
	}

	// With the setting deleted gRPC un-ejects bad: calls fail again.
	t0, mark = time.Now(), calls.len()
	if err := cluster.Dynamic().Resource(osmpolicy.UpstreamTrafficSettingGVR).Namespace(outlierStoreNS).Delete(context.Background(), "store", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	back := waitCalls(t, calls, mark, 30*time.Second, "a call refused by bad with the setting deleted", func(cs []call) int {
		for i, c := range cs {
			if refused(c) {
				return i + 1
			}
		}
		return -1
	})
	t.Logf("setting deleted: the first call refused by bad %s after the delete", calls0(calls, mark, back).at().Sub(t0).Round(time.Millisecond))
	waitCalls(t, calls, calls.len(), 30*time.Second, "100 calls to both pods after the delete", both(100))

	if n := nacks(t, m); n != 0 {
		t.Errorf("the edge counted %v NACKs", n)
	}
	t.Logf("TestProxylessGRPCOutlierDetection took %s", time.Since(start).Round(time.Millisecond))
}
