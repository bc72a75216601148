package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestIngressBackendFlow runs an IngressBackend through the real
// apiserver, the smi-watcher, the policy-compiler and an xds-edge to the
// backend's proxy (go-control-plane's ADS client): the backend's inbound
// listener gets a plaintext HTTP chain admitting the ingress controller
// Service's endpoint; a second controller pod's address reaches the chain
// as its endpoint appears; an invalid edit is rejected with an Event
// naming the field and the chain stays.
func TestIngressBackendFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, ingNS, meshName, mcName := "ib-store"+run, "ib-ingress"+run, "ib"+run, "ib-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, storeNS, map[string]string{layout.LabelMonitoredBy: meshName}, "bookstore")
	namespace(t, ingNS, map[string]string{layout.LabelMonitoredBy: meshName}, "ingress")
	meshConfig(t, mcName, false)
	kubelet := node(t, "ib-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.30")
	service(t, ingNS, "ingress-nginx", 80)
	readyPod(t, kubelet, ingNS, "ingress-1", "ingress", "ingress-nginx", "10.244.9.40")
	create(t, kube.IngressBackends, storeNS, map[string]any{
		"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "IngressBackend",
		"metadata": map[string]any{"name": "bookstore"},
		"spec": map[string]any{
			"backends": []any{map[string]any{"name": "bookstore", "port": map[string]any{"number": int64(14001), "protocol": "http"}}},
			"sources":  []any{map[string]any{"kind": "Service", "name": "ingress-nginx", "namespace": ingNS}},
		},
	})

	m := startMesh(t, stack.Options{Name: "ib", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	cert, err := m.WorkloadCert(ctx, identityOf(storeNS, "bookstore"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.DialEdge(cert.Pair)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	store := &proxyConn{t: t, cc: cc, node: nodeOf("bookstore-1-uuid", "bookstore", storeNS)}
	inbound, chainName := "inbound-listener:"+storeNS+"/bookstore", "ingress:"+storeNS+"/bookstore|14001"
	// ranges are the source ranges of the ingress chain, or an error.
	ranges := func(rs []any) ([]string, error) {
		l := findListener(rs, inbound)
		if l == nil {
			return nil, fmt.Errorf("no %s", inbound)
		}
		var fc *listenerv3.FilterChain
		for _, c := range l.GetFilterChains() {
			if c.GetName() == chainName {
				fc = c
			}
		}
		if fc == nil {
			return nil, fmt.Errorf("%s has no chain %s", inbound, chainName)
		}
		if p := fc.GetFilterChainMatch().GetTransportProtocol(); p != "raw_buffer" {
			return nil, fmt.Errorf("chain %s matches %q, want plaintext", chainName, p)
		}
		var out []string
		for _, r := range fc.GetFilterChainMatch().GetSourcePrefixRanges() {
			out = append(out, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		}
		return out, nil
	}
	want := func(w ...string) func([]any) error {
		return func(rs []any) error {
			got, err := ranges(rs)
			if err != nil {
				return err
			}
			if !slices.Equal(got, w) {
				return fmt.Errorf("ranges %v, want %v", got, w)
			}
			return nil
		}
	}
	lds, listeners := store.fetch(typeLDS)
	if err := want("10.244.9.40/32")(listeners); err != nil {
		nextUntil(t, lds, "the ingress chain admitting the controller", want("10.244.9.40/32"))
	}

	// A second controller pod: its address is admitted as its endpoint appears.
	start := time.Now()
	readyPod(t, kubelet, ingNS, "ingress-2", "ingress", "ingress-nginx", "10.244.9.41")
	nextUntil(t, lds, "the second controller pod admitted", want("10.244.9.40/32", "10.244.9.41/32"))
	t.Logf("controller endpoint to the backend's ingress chain: %s", time.Since(start).Round(time.Millisecond))

	// An invalid edit (the CRD lets a malformed CIDR through; the webhook
	// is not part of this stack) is rejected with its field, and the
	// backend keeps its chain.
	if _, err := cluster.Dynamic().Resource(kube.IngressBackends).Namespace(storeNS).Patch(ctx, "bookstore", types.MergePatchType,
		[]byte(`{"spec":{"sources":[{"kind":"Service","name":"ingress-nginx","namespace":"`+ingNS+`"},{"kind":"IPRange","name":"10.0.0.1"}]}}`),
		metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an Event naming the field", 30*time.Second, func() error {
		for _, ev := range watcherEvents(t, storeNS) {
			if ev.InvolvedObject.Kind == "IngressBackend" && ev.InvolvedObject.Name == "bookstore" &&
				strings.Contains(ev.Message, "IngressBackend "+storeNS+`/bookstore rejected: spec.sources[1].name: "10.0.0.1" is not a CIDR range`) {
				return nil
			}
		}
		return fmt.Errorf("no Event on IngressBackend bookstore yet: %v", watcherEvents(t, storeNS))
	})
	_, listeners = store.fetch(typeLDS)
	if err := want("10.244.9.40/32", "10.244.9.41/32")(listeners); err != nil {
		t.Fatalf("after a rejected edit: %v", err)
	}
}
