package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// readmeKinds are the kinds the README must show an example of: every
// policy kind the mesh reads, and the MeshConfig. An OSM policy kind added
// to osmpolicy.Kinds without an entry here fails the test.
var readmeKinds = map[string]schema.GroupVersionResource{
	"TrafficTarget":          kube.TrafficTargets,
	"HTTPRouteGroup":         kube.HTTPRouteGroups,
	"TCPRoute":               kube.TCPRoutes,
	"TrafficSplit":           kube.TrafficSplits,
	"MeshConfig":             kube.MeshConfigs,
	"Egress":                 osmpolicy.EgressGVR,
	"Retry":                  osmpolicy.RetryGVR,
	"UpstreamTrafficSetting": osmpolicy.UpstreamTrafficSettingGVR,
	"IngressBackend":         osmpolicy.IngressBackendGVR,
}

// readmeExamples are the objects of the README's yaml blocks whose
// apiVersion is one of the mesh's groups.
func readmeExamples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	indent := ""
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case cur == nil && trimmed == "```yaml":
			cur, indent = &strings.Builder{}, line[:len(line)-len(trimmed)]
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	var out []*unstructured.Unstructured
	for _, b := range blocks {
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(b), 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("README yaml block does not parse: %v\n%s", err, b)
			}
			u := &unstructured.Unstructured{Object: obj}
			if g := u.GroupVersionKind().Group; strings.HasSuffix(g, "smi-spec.io") || strings.HasSuffix(g, "openservicemesh.io") {
				out = append(out, u)
			}
		}
	}
	return out
}

// TestREADMEPolicyExamples: the README shows an example of every policy
// kind and of the MeshConfig, and each example, applied as written (server
// side, strict field validation, dry run) to the real apiserver with the
// mesh's CRDs, passes their schemas and the injector's validating webhook.
func TestREADMEPolicyExamples(t *testing.T) {
	ctx := t.Context()
	for _, k := range osmpolicy.Kinds() {
		if !slices.Contains(slices.Collect(maps.Values(readmeKinds)), k.Resource) {
			t.Fatalf("osmpolicy kind %s has no entry in readmeKinds", k.Resource)
		}
	}
	examples := readmeExamples(t)
	shown := map[string]bool{}
	for _, u := range examples {
		shown[u.GetKind()] = true
	}
	for kind := range readmeKinds {
		if !shown[kind] {
			t.Errorf("README.md has no example of %s", kind)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	m := meshUp(t)
	allowed := func() float64 {
		v, _ := apptest.MetricValue(m.AdminAddr(stack.Injector), "osm_injector_policy_validations_total", `outcome="allowed"`)
		return v
	}
	// The namespaces the examples use, in the mesh: the validating
	// webhook is called for the namespaces the mesh monitors.
	for _, u := range examples {
		namespace(t, u.GetNamespace(), map[string]string{"openservicemesh.io/monitored-by": "osm"})
	}
	// Wait for the apiserver to call the webhook: an invalid TrafficSplit
	// is refused.
	bad := policyObject(kube.TrafficSplits, "TrafficSplit", "readme-probe", map[string]any{"service": "bookstore",
		"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(0)}}})
	eventually(t, "the validating webhook refusing an invalid TrafficSplit", 30*time.Second, func() error {
		if err := createPolicy(ctx, kube.TrafficSplits, "bookstore", bad, true); err == nil {
			return errors.New("accepted")
		}
		return nil
	})

	for _, u := range examples {
		gvr, ok := readmeKinds[u.GetKind()]
		if !ok || gvr.GroupVersion().String() != u.GetAPIVersion() {
			t.Errorf("README example %s %s/%s: apiVersion %s is not the one the mesh serves (%s)",
				u.GetKind(), u.GetNamespace(), u.GetName(), u.GetAPIVersion(), gvr.GroupVersion())
			continue
		}
		body, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		before := allowed()
		force := true
		_, err = cluster.Dynamic().Resource(gvr).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "readme-example", Force: &force, DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		if err != nil {
			t.Errorf("README example %s %s/%s refused: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			continue
		}
		if got := allowed() - before; got != 1 {
			t.Errorf("README example %s %s/%s: the webhook allowed %v objects, want 1 (was it called?)", u.GetKind(), u.GetNamespace(), u.GetName(), got)
		}
	}
}
