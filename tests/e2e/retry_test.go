package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/stack"
)

const (
	typeLDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// retryObject is an OSM Retry (policy.openservicemesh.io/v1alpha1, OSM's
// own field names) from ServiceAccount sa of ns to Service svcNS/svc.
func retryObject(name, ns, sa, svcNS, svc, retryOn string) map[string]any {
	return map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"source":       map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": ns},
			"destinations": []any{map[string]any{"kind": "Service", "name": svc, "namespace": svcNS}},
			"retryPolicy": map[string]any{"retryOn": retryOn, "perTryTimeout": "1s", "numRetries": int64(3),
				"retryBackoffBaseInterval": "25ms"},
		},
	}
}

// TestRetryFlow: a Retry applied through the apiserver goes through the
// smi-watcher, the policy-compiler and an xds-edge to bookbuyer's proxy (a
// real xDS client): its route to bookstore gets Envoy's retry policy and
// its listener names that route; the MeshConfig's
// spec.featureFlags.enableRetryPolicy false brings the shared route back and
// true the Retry's again; deleting the Retry brings the shared route back.
// An invalid Retry (stored: no webhook runs here) gets the compiler's
// rejection as a Warning Event naming the field.
func TestRetryFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "retry-store"+run, "retry-buyer"+run, "retry"+run, "retry-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "retry-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.9.20")

	m := startMesh(t, stack.Options{Name: "retry", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	proxyCert, err := m.WorkloadCert(ctx, identityOf(buyerNS, "bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(proxyCert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	node := nodeOf("bookbuyer-1-uuid", "bookbuyer", buyerNS)
	shared := storeNS + "/bookstore|14001"
	copyName := shared + "|retry|" + buyerNS + "/bookbuyer"

	rds, routes, err := adsFetch(ctx, cc, node, typeRDS)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names(routes), shared) {
		t.Fatalf("bookbuyer's routes %v lack %s", names(routes), shared)
	}
	// next waits for the RDS response that satisfies ok (30 s at most, a
	// response or not).
	next := func(what string, ok func([]any) bool) []any {
		t.Helper()
		if ok(routes) {
			return routes
		}
		nextWithin(t, rds, what, func(rs []any) error {
			routes = rs
			if ok(rs) {
				return nil
			}
			return fmt.Errorf("bookbuyer's routes %v", names(rs))
		})
		return routes
	}

	start := time.Now()
	create(t, osmpolicy.RetryGVR, buyerNS, retryObject("bookbuyer-retry", buyerNS, "bookbuyer", storeNS, "bookstore", "5xx,unavailable"))
	next("the Retry's route", func(rs []any) bool {
		return slices.Contains(names(rs), copyName) && !slices.Contains(names(rs), shared)
	})
	t.Logf("Retry created to route on the proxy: %s", time.Since(start).Round(time.Millisecond))
	var rc *routev3.RouteConfiguration
	for _, r := range routes {
		if x, ok := r.(*routev3.RouteConfiguration); ok && x.GetName() == copyName {
			rc = x
		}
	}
	rp := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRetryPolicy()
	if rp.GetRetryOn() != "5xx,unavailable" || rp.GetNumRetries().GetValue() != 3 || rp.GetPerTryTimeout().AsDuration() != time.Second ||
		rp.GetRetryBackOff().GetBaseInterval().AsDuration() != 25*time.Millisecond {
		t.Fatalf("retry policy of %s: %v", copyName, rp)
	}
	if err := rc.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	_, listeners, err := adsFetch(ctx, cc, node, typeLDS)
	if err != nil {
		t.Fatal(err)
	}
	var rdsNames []string
	for _, r := range listeners {
		l, ok := r.(*listenerv3.Listener)
		if !ok || !strings.HasPrefix(l.GetName(), "outbound-listener:"+storeNS+"/") {
			continue
		}
		rdsNames = append(rdsNames, l.GetName())
	}
	if want := []string{"outbound-listener:" + copyName}; !slices.Equal(rdsNames, want) {
		t.Fatalf("bookbuyer's listeners for bookstore %v, want %v", rdsNames, want)
	}

	// The MeshConfig's spec.featureFlags.enableRetryPolicy false turns
	// every Retry off: the shared route comes back; true restores the copy.
	for _, on := range []bool{false, true} {
		if err := patchMeshConfig(t, mcName, fmt.Sprintf(`{"spec":{"featureFlags":{"enableRetryPolicy":%t}}}`, on)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		next(fmt.Sprintf("enableRetryPolicy %t", on), func(rs []any) bool {
			return slices.Contains(names(rs), copyName) == on && slices.Contains(names(rs), shared) != on
		})
		t.Logf("enableRetryPolicy %t to the proxy's routes: %s", on, time.Since(start).Round(time.Millisecond))
	}

	// An invalid Retry is stored (no webhook here) and rejected by the
	// compiler; the watcher records its words as a Warning Event.
	create(t, osmpolicy.RetryGVR, buyerNS, retryObject("bad-retry", buyerNS, "bookbuyer", storeNS, "bookstore", "5xx,sometimes"))
	want := fmt.Sprintf(`Retry %s/bad-retry rejected: spec.retryPolicy.retryOn: unknown retry condition "sometimes"`, buyerNS)
	eventually(t, "the rejection's Event", 30*time.Second, func() error {
		for _, ev := range watcherEvents(t, buyerNS) {
			if ev.InvolvedObject.Name == "bad-retry" && ev.Type == "Warning" && strings.HasPrefix(ev.Message, want) {
				return nil
			}
		}
		return fmt.Errorf("no Warning Event %q on bad-retry", want)
	})

	if err := cluster.Dynamic().Resource(osmpolicy.RetryGVR).Namespace(buyerNS).Delete(context.Background(), "bookbuyer-retry", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next("the Retry's deletion", func(rs []any) bool {
		return !slices.Contains(names(rs), copyName) && slices.Contains(names(rs), shared)
	})
}
