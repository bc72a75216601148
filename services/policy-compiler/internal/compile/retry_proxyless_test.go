package compile

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// retryOn is bookbuyer's Retry to bookstore with its conditions set to on.
func retryOn(on string) synth.Object {
	o := synth.Retry("bookbuyer", "bookbuyer-retry", "bookbuyer", "bookstore", "bookstore")
	o.Msg.(*meshv1.Retry).RetryPolicy.RetryOn = on
	return o
}

// retryStatus is the status d carries for bookbuyer's Retry, nil if none.
func retryStatus(d *Delta) *meshv1.PolicyStatus {
	for _, st := range d.Statuses {
		if o := st.GetObject(); o.GetKind() == "Retry" && o.GetNamespace() == "bookbuyer" && o.GetName() == "bookbuyer-retry" {
			return st
		}
	}
	return nil
}

// TestRetryProxylessWarning: with the gRPC flavour, a Retry whose retryOn
// holds conditions gRPC-Go does not read is accepted with a warning on
// spec.retryPolicy.retryOn naming them and the source, saying the Retry
// does nothing for proxyless clients when none is left; the source's
// Envoy copy still retries on all of them. Without the flavour, or with
// gRPC conditions only, it is accepted plainly.
func TestRetryProxylessWarning(t *testing.T) {
	const msgStart = "Retry bookbuyer/bookbuyer-retry accepted with a warning: spec.retryPolicy.retryOn: "
	for _, tc := range []struct {
		name      string
		proxyless bool
		on        string
		cond      meshv1.PolicyCondition
		reason    string
		says      []string
	}{
		{"some HTTP conditions", true, "5xx,unavailable,reset", meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING,
			ReasonRetryOnIgnoredByProxylessGRPC, []string{"5xx, reset dropped", "ServiceAccount bookbuyer/bookbuyer", "retry on unavailable only"}},
		{"HTTP conditions only", true, "5xx,reset,connect-failure,gateway-error", meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING,
			ReasonRetryDoesNothingForProxylessGRPC, []string{"none of 5xx, reset, connect-failure, gateway-error", "ServiceAccount bookbuyer/bookbuyer", "does nothing"}},
		{"gRPC conditions only", true, "unavailable,cancelled", meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED, ReasonAccepted, nil},
		{"no gRPC flavour", false, "5xx,reset", meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED, ReasonAccepted, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine()
			if tc.proxyless {
				e = grpcEngine()
			}
			d := load(t, e, append(synth.Bookstore(false), retryOn(tc.on), grpcRoutes()))
			st := retryStatus(d)
			if st.GetCondition() != tc.cond || st.GetReason() != tc.reason {
				t.Fatalf("status %v, want %v %s", st, tc.cond, tc.reason)
			}
			if tc.says != nil {
				if st.GetFieldPath() != "spec.retryPolicy.retryOn" || !strings.HasPrefix(st.GetMessage(), msgStart) {
					t.Errorf("field %q message %q", st.GetFieldPath(), st.GetMessage())
				}
				for _, s := range tc.says {
					if !strings.Contains(st.GetMessage(), s) {
						t.Errorf("message %q does not say %q", st.GetMessage(), s)
					}
				}
			}
			// The Envoy sidecars' copy retries on every condition.
			rc := decode(t, e, layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer", &routev3.RouteConfiguration{})
			if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRetryPolicy().GetRetryOn(); got != tc.on {
				t.Errorf("the Envoy copy retries on %q, want %q", got, tc.on)
			}
		})
	}
}

// TestRetryProxylessWarningFollowsEdits: the warning comes and goes with
// the conditions as the Retry is edited, each change published once.
func TestRetryProxylessWarningFollowsEdits(t *testing.T) {
	e := grpcEngine()
	load(t, e, append(synth.Bookstore(false), retryOn("unavailable"), grpcRoutes()))
	for _, step := range []struct {
		on     string
		reason string
	}{
		{"unavailable,5xx", ReasonRetryOnIgnoredByProxylessGRPC},
		{"5xx", ReasonRetryDoesNothingForProxylessGRPC},
		{"unavailable", ReasonAccepted},
	} {
		st := retryStatus(apply(t, e, retryOn(step.on)))
		if st.GetReason() != step.reason {
			t.Errorf("retryOn %q: status %v, want reason %s", step.on, st, step.reason)
		}
		if st := retryStatus(apply(t, e, retryOn(step.on))); st != nil {
			t.Errorf("retryOn %q applied again: status %v published again", step.on, st)
		}
	}
}
