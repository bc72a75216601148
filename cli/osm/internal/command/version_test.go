package command

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestVersion: osm version against the harness with two of the chart's
// workloads, one of them at another version; --client without a cluster;
// an unreachable cluster still shows the client's version and fails.
func TestVersion(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	const ns = "osm-versiontest"
	old := version
	version = "v0.9.0-test"
	defer func() { version = old }()

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	one := int32(1)
	// The compiler at the embedded chart's appVersion, the edge at another.
	for _, c := range []struct{ component, tag string }{{"policy-compiler", thisVersion().ChartAppVersion}, {"xds-edge", "0.0.9"}} {
		labels := map[string]string{partOfLabel: "osm", wlComponentLabel: c.component, wlVersionLabel: c.tag, "app.kubernetes.io/instance": "osm"}
		sel := map[string]string{"app.kubernetes.io/name": "osm-" + c.component}
		_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "osm-" + c.component, Labels: labels},
			Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: sel},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: c.component, Image: "ghcr.io/openservicemesh/osm-" + c.component + ":" + c.tag}}}}},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// Not the mesh's: no part-of label.
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "other"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	stable := func(s string) string {
		return strings.ReplaceAll(s, runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH, "GO, OS/ARCH")
	}
	golden(t, "version.txt", stable(mustOSM(t, "-n", ns, "version")))

	var v versions
	if err := json.Unmarshal([]byte(mustOSM(t, "-n", ns, "version", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Client.Version != "v0.9.0-test" || v.Client.Chart == "" || len(v.Components) != 2 || v.Components[1].Version != "0.0.9" || v.Components[0].Skew || !v.Components[1].Skew ||
		v.Components[0].Images[0] != "ghcr.io/openservicemesh/osm-policy-compiler:"+thisVersion().ChartAppVersion || v.Namespace != ns {
		t.Errorf("osm version -o json: %+v", v)
	}

	// --client reaches no cluster: a kubeconfig that points nowhere.
	bad := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\ncurrent-context: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustOSM(t, "--kubeconfig", bad, "version", "--client", "-o", "yaml")
	if !strings.Contains(out, "version: v0.9.0-test") || strings.Contains(out, "components") {
		t.Errorf("osm version --client -o yaml:\n%s", out)
	}
	out, err = osm(t, "--kubeconfig", bad, "version")
	if err == nil || !strings.Contains(err.Error(), "osm version --client skips the cluster") || !strings.Contains(out, "v0.9.0-test") {
		t.Errorf("osm version against no cluster: %v\n%s; want the client's row and an error", err, out)
	}
}
