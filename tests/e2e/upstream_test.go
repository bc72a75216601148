package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestUpstreamTrafficSetting runs an UpstreamTrafficSetting through the
// real apiserver, the smi-watcher, the policy-compiler and an xds-edge to
// a bookbuyer proxy (go-control-plane's ADS client): its connection limits
// and outlier detection are on the bookstore cluster the proxy receives,
// an edit reaches it, and a second setting for the same Service is
// rejected with an Event naming the field.
func TestUpstreamTrafficSetting(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "uts-store"+run, "uts-buyer"+run, "uts"+run, "uts-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "uts-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.9.20")
	create(t, kube.UpstreamTrafficSettings, storeNS, map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"host": "bookstore." + storeNS + ".svc.cluster.local",
			"connectionSettings": map[string]any{
				"tcp":  map[string]any{"maxConnections": int64(50), "connectTimeout": "3s"},
				"http": map[string]any{"maxRequests": int64(20)},
			},
			"outlierDetection": map[string]any{"consecutive5xxErrors": int64(2), "interval": "1s", "baseEjectionTime": "10s", "maxEjectionPercent": int64(100)},
		},
	})

	m := startMesh(t, stack.Options{Name: "uts", MeshName: meshName, MeshConfig: mcName},
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
	cds, rs, err := adsFetch(ctx, cc, nodeOf("bookbuyer-1-uuid", "bookbuyer", buyerNS), typeCDS)
	if err != nil {
		t.Fatal(err)
	}
	store := storeNS + "/bookstore|14001"
	// settings of the bookstore cluster the proxy holds, as a string.
	settings := func(rs []any) string {
		for _, r := range rs {
			if c, ok := r.(*clusterv3.Cluster); ok && c.GetName() == store {
				var th *clusterv3.CircuitBreakers_Thresholds
				if t := c.GetCircuitBreakers().GetThresholds(); len(t) == 1 {
					th = t[0]
				}
				od := c.GetOutlierDetection()
				return fmt.Sprintf("maxConnections=%d maxRequests=%d connectTimeout=%s consecutive5xx=%d interval=%s",
					th.GetMaxConnections().GetValue(), th.GetMaxRequests().GetValue(), c.GetConnectTimeout().AsDuration(),
					od.GetConsecutive_5Xx().GetValue(), od.GetInterval().AsDuration())
			}
		}
		return "no cluster " + store
	}
	// wait reads CDS responses until the cluster's settings are want.
	wait := func(want string, rs []any) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for got := settings(rs); got != want; got = settings(rs) {
			next := make(chan []any, 1)
			go func() {
				resp, err := cds.Fetch()
				if err != nil {
					next <- nil
					return
				}
				_ = cds.Ack()
				rs, _ := unpackAll(resp.Resources)
				next <- rs
			}()
			select {
			case rs = <-next:
			case <-deadline:
				t.Fatalf("bookstore cluster: %s, want %s\n%s", got, want, m.Logs())
			}
		}
	}
	wait("maxConnections=50 maxRequests=20 connectTimeout=3s consecutive5xx=2 interval=1s", rs)

	start := time.Now()
	if _, err := cluster.Dynamic().Resource(kube.UpstreamTrafficSettings).Namespace(storeNS).Patch(ctx, "bookstore", types.MergePatchType,
		[]byte(`{"spec":{"connectionSettings":{"tcp":{"maxConnections":7}}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("maxConnections=7 maxRequests=20 connectTimeout=3s consecutive5xx=2 interval=1s", nil)
	t.Logf("UpstreamTrafficSetting edit to the proxy: %s", time.Since(start).Round(time.Millisecond))

	create(t, kube.UpstreamTrafficSettings, storeNS, map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
		"metadata": map[string]any{"name": "bookstore-again"},
		"spec":     map[string]any{"host": "bookstore"},
	})
	want := `UpstreamTrafficSetting ` + storeNS + `/bookstore-again rejected: spec.host: "bookstore" names Service ` + storeNS +
		`/bookstore, which UpstreamTrafficSetting ` + storeNS + `/bookstore already configures: one UpstreamTrafficSetting per upstream`
	eventually(t, "the watcher's Event on the second setting", 30*time.Second, func() error {
		var seen []string
		for _, ev := range watcherEvents(t, storeNS) {
			if ev.InvolvedObject.Kind == "UpstreamTrafficSetting" && ev.InvolvedObject.Name == "bookstore-again" {
				if ev.Reason == "HostConflict" && strings.Contains(ev.Message, want) {
					return nil
				}
				seen = append(seen, ev.Reason+": "+ev.Message)
			}
		}
		return fmt.Errorf("events %v, want HostConflict %q", seen, want)
	})
}
