package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestRetryProxylessWarningEvent: with the compiler's gRPC flavour
// (--proxyless-grpc), Retries created through the apiserver whose retryOn
// holds conditions gRPC-Go does not read are accepted with a warning that
// the smi-watcher records as a Warning Event on each Retry: the field
// spec.retryPolicy.retryOn and the dropped conditions, or, when none is
// left, that the Retry does nothing for the source's proxyless clients. A
// Retry with gRPC conditions only gets no Event.
func TestRetryProxylessWarningEvent(t *testing.T) {
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "retrypl-store"+run, "retrypl-buyer"+run, "retrypl"+run, "retrypl-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	service(t, storeNS, "bookstore", 14001)

	startMesh(t, stack.Options{Name: "retrypl", MeshName: meshName, MeshConfig: mcName,
		Flags: map[stack.Component][]string{stack.Compiler: {"--proxyless-grpc"}}},
		stack.Watcher, stack.Compiler)

	create(t, osmpolicy.RetryGVR, buyerNS, retryObject("grpc-only", buyerNS, "bookbuyer", storeNS, "bookstore", "unavailable,cancelled"))
	create(t, osmpolicy.RetryGVR, buyerNS, retryObject("mixed", buyerNS, "bookbuyer", storeNS, "bookstore", "5xx,unavailable,reset"))
	create(t, osmpolicy.RetryGVR, buyerNS, retryObject("http-only", buyerNS, "bookbuyer", storeNS, "bookstore", "5xx,connect-failure,gateway-error"))
	want := map[string]struct{ reason, message string }{
		"mixed": {"RetryOnIgnoredByProxylessGRPC", fmt.Sprintf("Retry %s/mixed accepted with a warning: spec.retryPolicy.retryOn: "+
			"5xx, reset dropped for proxyless gRPC clients of ServiceAccount %s/bookbuyer, which retry on unavailable only", buyerNS, buyerNS)},
		"http-only": {"RetryDoesNothingForProxylessGRPC", fmt.Sprintf("Retry %s/http-only accepted with a warning: spec.retryPolicy.retryOn: "+
			"none of 5xx, connect-failure, gateway-error applies to proxyless gRPC clients of ServiceAccount %s/bookbuyer, so this Retry does nothing for them", buyerNS, buyerNS)},
	}
	eventually(t, "the warnings' Events", 30*time.Second, func() error {
		found := map[string]bool{}
		for _, ev := range watcherEvents(t, buyerNS) {
			w, ok := want[ev.InvolvedObject.Name]
			if ok && ev.InvolvedObject.Kind == "Retry" && ev.Type == "Warning" && ev.Reason == w.reason && strings.HasPrefix(ev.Message, w.message) {
				found[ev.InvolvedObject.Name] = true
			}
		}
		for name, w := range want {
			if !found[name] {
				return fmt.Errorf("no Warning Event %s %q on Retry %s", w.reason, w.message, name)
			}
		}
		return nil
	})
	// grpc-only was compiled first; its acceptance records nothing.
	for _, ev := range watcherEvents(t, buyerNS) {
		if ev.InvolvedObject.Name == "grpc-only" {
			t.Errorf("Event on Retry grpc-only, whose conditions are all gRPC's: %s %s", ev.Reason, ev.Message)
		}
	}
}
