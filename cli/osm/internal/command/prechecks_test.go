package command

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	osmkube "github.com/openservicemesh/osm/tests/kube"
)

// osmStreams runs the CLI as osm does, and returns stdout and stderr
// apart.
func osmStreams(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut strings.Builder
	off := false
	cmd := New(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut, Color: &off})
	cmd.SetArgs(append([]string{"--kubeconfig", cluster.KubeconfigPath()}, args...))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// TestInstallRunsTheChecksFirst: osm install runs osm check's checks before
// it applies anything. With a CRD of another implementation in the cluster
// (the chart's TrafficSplit CRD without the chart's label) it prints them,
// names the CRD with its hint and fails having created nothing; --dry-run
// runs them too (on stderr) and prints no manifest; --skip-checks installs
// anyway. osm upgrade runs the
// upgrade's checks: the foreign CRD stops it, the chart's let it through.
func TestInstallRunsTheChecksFirst(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	const ns = "osm-prechecks"
	const split = "trafficsplits.split.smi-spec.io"
	withChartCRDs(t)
	crds, err := osmkube.CRDDir()
	if err != nil {
		t.Fatal(err)
	}
	foreign := func() {
		t.Helper()
		patch := []byte(`{"metadata":{"labels":{"app.kubernetes.io/part-of":null}}}`)
		if _, err := cluster.Dynamic().Resource(crdGVR).Patch(ctx, split, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	foreign()
	t.Cleanup(func() {
		ctx := context.Background()
		// uninstall, if the test got that far, and the namespace
		_, _ = osm(t, "uninstall", "-n", ns)
		_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	objs := manifestObjects(t, mustOSM(t, "install", "-n", ns, "--dry-run", "--skip-checks"))
	nothingCreated := func(after string) {
		t.Helper()
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("after %s, namespace %s: %v; want not found", after, ns, err)
		}
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" {
				continue // the test's own
			}
			if exists(ctx, t, withNamespace(o, ns)) {
				t.Fatalf("after %s, %s %s exists", after, o.GetKind(), o.GetName())
			}
		}
	}
	refused := func(what, out string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "1 of ") || !strings.Contains(err.Error(), "checks failed") || !strings.Contains(err.Error(), "--skip-checks") {
			t.Fatalf("%s with a foreign CRD: %v; want one check failed, and --skip-checks named\n%s", what, err, out)
		}
		for _, want := range []string{"✘ CRD " + split + ": exists and is not this chart's", "kubectl delete crd " + split, "✔ may create deployments.apps in namespace " + ns} {
			if !strings.Contains(out, want) {
				t.Errorf("%s does not say %q:\n%s", what, want, out)
			}
		}
	}

	// The dry run: the checks on stderr, no manifest.
	out, errOut, err := osmStreams(t, "install", "-n", ns, "--dry-run")
	refused("install --dry-run", errOut, err)
	if strings.TrimSpace(out) != "" {
		t.Errorf("install --dry-run with a failed check printed a manifest:\n%.300s", out)
	}
	nothingCreated("install --dry-run")

	// The install: the checks on the output, and nothing created.
	out, err = osm(t, "install", "-n", ns, "--wait=false")
	refused("install", out, err)
	if !strings.HasPrefix(out, "Pre-install checks (as osm check):") || strings.Contains(out, "Installed release") {
		t.Errorf("install's output does not start with the checks, or says it installed:\n%s", out)
	}
	nothingCreated("the refused install")

	// --skip-checks installs over the foreign CRD.
	out = mustOSM(t, "install", "-n", ns, "--wait=false", "--skip-checks")
	if strings.Contains(out, "Pre-install checks") || !strings.Contains(out, "✔ Installed release osm (revision 1") {
		t.Fatalf("install --skip-checks ran the checks, or did not install:\n%s", out)
	}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" && !exists(ctx, t, withNamespace(o, ns)) {
			t.Errorf("after install --skip-checks, %s %s does not exist", o.GetKind(), o.GetName())
		}
	}
	// What to do next: verify first; and no wait was made.
	for _, want := range []string{"Not waiting for the components (--wait=false)", "osm verify --namespace " + ns, "osm namespace add NAMESPACE --namespace " + ns} {
		if !strings.Contains(out, want) {
			t.Errorf("install --wait=false does not say %q:\n%s", want, out)
		}
	}

	// The upgrade's checks: the foreign CRD stops it at revision 1. (Helm
	// v4 server-side applies the chart's CRDs at install: over this one,
	// whose spec is the chart's, it put the label back; seed it again.)
	foreign()
	out, err = osm(t, "upgrade", "-n", ns, "--reuse-values", "--wait=false")
	if err == nil || !strings.Contains(err.Error(), "pre-upgrade checks failed, nothing was changed") || !strings.Contains(out, "✘ CRD "+split+": exists and is not this chart's") {
		t.Fatalf("upgrade with a foreign CRD: %v; want the CRD named\n%s", err, out)
	}
	// With the chart's CRDs back it passes them: patch on what exists.
	if err := cluster.ApplyCRDs(ctx, crds); err != nil {
		t.Fatal(err)
	}
	out = mustOSM(t, "upgrade", "-n", ns, "--reuse-values", "--wait=false")
	for _, want := range []string{"Pre-upgrade checks (as osm check):", "✔ CRD " + split + ": this chart's", "✔ may patch deployments.apps in namespace " + ns,
		"✔ may update secrets in namespace " + ns, "Status: ✔ all ", "✔ Upgraded release osm (revision 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "may create namespaces") || strings.Contains(out, "may create customresourcedefinitions") {
		t.Errorf("the upgrade's checks ask for what an upgrade does not do:\n%s", out)
	}
	// A CRD missing: an upgrade does not create it.
	const tcp = "tcproutes.specs.smi-spec.io"
	if err := cluster.Dynamic().Resource(crdGVR).Delete(ctx, tcp, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err = osm(t, "upgrade", "-n", ns, "--reuse-values", "--wait=false")
	if err == nil || !strings.Contains(out, "✘ CRD "+tcp+": absent, and osm upgrade does not create CRDs") {
		t.Fatalf("upgrade with a CRD missing: %v; want it named\n%s", err, out)
	}
}

// withNamespace is o in ns when o names none.
func withNamespace(o *unstructured.Unstructured, ns string) *unstructured.Unstructured {
	o = o.DeepCopy()
	if o.GetNamespace() == "" {
		o.SetNamespace(ns)
	}
	return o
}
