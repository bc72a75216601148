package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// onAddress lists the listeners of rs with addr among their addresses.
func onAddress(rs []any, addr string) []string {
	var out []string
	for _, r := range rs {
		if l, ok := r.(*listenerv3.Listener); ok && slices.Contains(listenerAddrs(l), addr) {
			out = append(out, l.GetName())
		}
	}
	return out
}

// TestHeadlessSharedAddressFlow: two headless Services selecting the same
// pod on the same port, through the real apiserver (its EndpointSlice
// controller), the watcher, the compiler and an edge, give a real xDS
// client one listener on the pod's address, cache's (first by name), where
// Envoy would refuse two; cache-replicas gets a Warning Event naming
// spec.ports[0] and its owner. Deleting cache moves the address to
// cache-replicas' listener.
func TestHeadlessSharedAddressFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	appNS, meshName, mcName := "hshared-app"+run, "hshared"+run, "hshared-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, appNS, map[string]string{layout.LabelMonitoredBy: meshName}, "client", "cache")
	meshConfig(t, mcName, true)
	kubelet := node(t, "hshared-node")
	svcs := cluster.Clientset().CoreV1().Services(appNS)
	tcp := "tcp"
	for _, name := range []string{"cache-replicas", "cache"} {
		if _, err := svcs.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "cache"}, Ports: []corev1.ServicePort{
				{Name: "redis", Port: 14002, TargetPort: intstr.FromInt32(14002), AppProtocol: &tcp},
			}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	readyPod(t, kubelet, appNS, "cache-0", "cache", "cache", "10.244.13.10")
	readyPod(t, kubelet, appNS, "client-1", "client", "client", "10.244.13.20")

	m := startMesh(t, stack.Options{Name: "hshared", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	cert, err := m.WorkloadCert(ctx, identityOf(appNS, "client"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(cert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := &proxyConn{t: t, cc: cc, node: nodeOf("client-1-uuid", "client", appNS)}

	addr := "10.244.13.10:14002"
	owner, loser := "outbound-listener:"+appNS+"/cache|14002", "outbound-listener:"+appNS+"/cache-replicas|14002"
	eventually(t, "a warning Event on cache-replicas", 30*time.Second, func() error {
		for _, ev := range watcherEvents(t, appNS) {
			if ev.InvolvedObject.Kind == "Service" && ev.InvolvedObject.Name == "cache-replicas" && ev.Reason == "HeadlessAddressTaken" &&
				ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "spec.ports[0]") &&
				strings.Contains(ev.Message, addr) && strings.Contains(ev.Message, "headless Service "+appNS+"/cache,") {
				return nil
			}
		}
		return fmt.Errorf("no Event on Service cache-replicas yet: %v", watcherEvents(t, appNS))
	})

	// Fetched after the warning, so the first response holds both Services.
	lds, listeners := client.fetch(typeLDS)
	fromFirst(t, lds, listeners, "one listener on cache-0, cache's", func(rs []any) error {
		if got := onAddress(rs, addr); !slices.Equal(got, []string{owner}) {
			return fmt.Errorf("listeners on %s: %v (listeners %v)", addr, got, names(rs))
		}
		return nil
	})
	start := time.Now()
	if err := svcs.Delete(ctx, "cache", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	nextUntil(t, lds, "cache-replicas' listener taking cache-0 over", func(rs []any) error {
		if got := onAddress(rs, addr); !slices.Equal(got, []string{loser}) {
			return fmt.Errorf("listeners on %s: %v", addr, got)
		}
		return nil
	})
	t.Logf("owner deleted to the address taken over: %s", time.Since(start).Round(time.Millisecond))
}
