package meshconfig

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openservicemesh/osm/libs/policy"
)

// TestFeatureFlags: spec.featureFlags.enableRetryPolicy is read as
// written; unset means Retry on, false off, and a value of the wrong type
// is recorded and leaves it unset.
func TestFeatureFlags(t *testing.T) {
	for _, c := range []struct {
		spec    map[string]any
		enabled bool
		invalid int
	}{
		{spec: map[string]any{}, enabled: true},
		{spec: map[string]any{"featureFlags": map[string]any{}}, enabled: true},
		{spec: map[string]any{"featureFlags": map[string]any{"enableRetryPolicy": false}}, enabled: false},
		{spec: map[string]any{"featureFlags": map[string]any{"enableRetryPolicy": true}}, enabled: true},
		{spec: map[string]any{"featureFlags": map[string]any{"enableRetryPolicy": "no"}}, enabled: true, invalid: 1},
	} {
		mc := Parse(&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "m"}, "spec": c.spec}})
		if got := policy.RetryPolicyEnabled(mc); got != c.enabled || len(mc.GetInvalidFields()) != c.invalid {
			t.Errorf("%v: enabled %v, invalid %v; want %v, %d", c.spec, got, mc.GetInvalidFields(), c.enabled, c.invalid)
		}
	}
}
