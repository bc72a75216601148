package command

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/cli/osm/internal/chart"
	osmkube "github.com/openservicemesh/osm/tests/kube"
)

// TestCheck runs osm check on the harness cluster: as its admin with the
// chart's CRDs in place every check passes (golden table); a CRD of the
// same name that is not the chart's is named as a conflict; a user with no
// RBAC is told each permission it lacks; the exit is an error on any ✘.
func TestCheck(t *testing.T) {
	ctx := t.Context()
	const ns = "osm-check"
	withChartCRDs(t)

	golden(t, "check.txt", mustOSM(t, "check", "-n", ns))

	// Another implementation's TrafficSplit CRD (the chart's label gone).
	const split = "trafficsplits.split.smi-spec.io"
	patch := []byte(`{"metadata":{"labels":{"app.kubernetes.io/part-of":null}}}`)
	if _, err := cluster.Dynamic().Resource(crdGVR).Patch(ctx, split, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := osm(t, "check", "-n", ns)
	if err == nil || !strings.Contains(err.Error(), "1 of ") {
		t.Fatalf("check with a foreign CRD: %v; want one check failed\n%s", err, out)
	}
	if !strings.Contains(out, "✘ CRD "+split+": exists and is not this chart's") || !strings.Contains(out, "kubectl delete crd "+split) {
		t.Errorf("check does not name the conflicting CRD with a hint:\n%s", out)
	}

	// A user without RBAC: every create is denied, each named.
	user := userKubeconfig(t, t.TempDir(), "default", "check-nobody")
	var out2 strings.Builder
	off := false
	cmd := New(Streams{In: strings.NewReader(""), Out: &out2, Err: &out2, Color: &off})
	cmd.SetArgs([]string{"--kubeconfig", user, "check", "-n", ns, "-o", "json"})
	err = cmd.ExecuteContext(ctx)
	var r report
	if jerr := json.Unmarshal([]byte(out2.String()), &r); jerr != nil {
		t.Fatalf("check -o json: %v\n%s", jerr, out2.String())
	}
	if err == nil || r.Failed == 0 {
		t.Fatalf("check as a user without RBAC: %v, %d failed; want failures", err, r.Failed)
	}
	failed := map[string]bool{}
	for _, res := range r.Results {
		if !res.OK {
			failed[res.Check] = true
			if res.Hint == "" {
				t.Errorf("failed check %q has no hint", res.Check)
			}
		}
	}
	for _, want := range []string{
		"may not create namespaces (cluster-wide)",
		"may not create secrets in namespace " + ns,
		"may not create deployments.apps in namespace " + ns,
		"may not create clusterroles.rbac.authorization.k8s.io (cluster-wide)",
		"may not create customresourcedefinitions.apiextensions.k8s.io (cluster-wide)",
	} {
		if !failed[want] {
			t.Errorf("check as a user without RBAC does not say %q; failed: %v", want, failed)
		}
	}
	roleRules := 0
	for c := range failed {
		if strings.HasPrefix(c, "hold not every rule of ClusterRole ") {
			roleRules++
		}
	}
	if roleRules == 0 {
		t.Errorf("check as a user without RBAC names no ClusterRole whose rules it lacks; failed: %v", failed)
	}
}

// withChartCRDs applies the chart's CRDs for the test and, when it ends,
// puts them back as they were: the ones the test found are applied again
// (a test may delete or alter one), the others deleted, as the install
// test expects a cluster without them.
func withChartCRDs(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	dir, err := osmkube.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	c, err := chart.Load()
	if err != nil {
		t.Fatal(err)
	}
	names, err := crdNames(c)
	if err != nil {
		t.Fatal(err)
	}
	var absent []string
	for _, n := range names {
		if _, err := cluster.Dynamic().Resource(crdGVR).Get(ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			absent = append(absent, n)
		}
	}
	if err := cluster.ApplyCRDs(ctx, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := cluster.ApplyCRDs(ctx, dir); err != nil {
			t.Errorf("restore the CRDs: %v", err)
		}
		for _, n := range absent {
			if err := cluster.Dynamic().Resource(crdGVR).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete CRD %s: %v", n, err)
			}
		}
		// a CRD goes once its objects are gone
		deadline := time.Now().Add(time.Minute)
		for _, n := range absent {
			for {
				_, err := cluster.Dynamic().Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("CRD %s still there a minute after its deletion: %v", n, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	})
}
