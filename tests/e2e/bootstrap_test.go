package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/openservicemesh/osm/tests/stack"
)

// TestBootstrapSecretLifecycle: admission answers before the bootstrap
// Secret is written, and the injector's reconciler makes that safe. The
// Secret appears shortly after the pod, created already owned by it; it
// goes with the pod (Kubernetes' garbage collector); a Secret lost to an
// injector restart is reissued; a pod the apiserver rejected after
// admission leaves no Secret; dry runs write nothing.
func TestBootstrapSecretLifecycle(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	m := meshUp(t, "--bootstrap-owner-wait", "1s", "--bootstrap-missing-grace", "1s", "--bootstrap-orphan-grace", "3s")
	ns := "bootstrap" + uniq()
	namespace(t, ns, map[string]string{"openservicemesh.io/monitored-by": "osm"}, "bookstore")
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}) })
	pods, secrets := cs.CoreV1().Pods(ns), cs.CoreV1().Secrets(ns)
	create := func(t *testing.T, name string) *corev1.Pod {
		t.Helper()
		var p *corev1.Pod
		eventually(t, "an injected pod "+name, 30*time.Second, func() error {
			var err error
			p, err = pods.Create(ctx, pod(name, nil), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				p, err = pods.Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			if len(p.Spec.Containers) != 2 {
				_ = pods.Delete(ctx, name, metav1.DeleteOptions{})
				return errors.New("pod created without the sidecar (webhook not called yet?)")
			}
			return nil
		})
		return p
	}
	owned := func(t *testing.T, p *corev1.Pod) *corev1.Secret {
		t.Helper()
		var sec *corev1.Secret
		eventually(t, "the secret owned by pod "+p.Name, 30*time.Second, func() error {
			var err error
			sec, err = secrets.Get(ctx, "envoy-bootstrap-"+p.Labels["osm-proxy-uuid"], metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, ref := range sec.OwnerReferences {
				if ref.Kind == "Pod" && ref.UID == p.UID {
					return nil
				}
			}
			return fmt.Errorf("owners %v", sec.OwnerReferences)
		})
		return sec
	}
	gone := func(t *testing.T, what, name string) {
		t.Helper()
		eventually(t, what, 90*time.Second, func() error {
			_, err := secrets.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("secret %s still there (%v)", name, err)
		})
	}

	t.Run("the secret is written after admission, created owned by the pod, and collected with it", func(t *testing.T) {
		w, err := secrets.Watch(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=osm-injector"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		p := create(t, "async-1")
		checkBootstrapSecret(t, p, m.Bundle())
		sec := owned(t, p)
		// The first version of the Secret already names the pod: one
		// write, no ownerReference patch.
		for first := false; !first; {
			select {
			case ev := <-w.ResultChan():
				got, ok := ev.Object.(*corev1.Secret)
				if !ok || ev.Type != watch.Added || got.Name != sec.Name {
					continue
				}
				first = true
				if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != p.UID {
					t.Fatalf("the secret was created with owners %v, want pod %s", got.OwnerReferences, p.UID)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no Added event for the secret")
			}
		}
		if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		gone(t, "the garbage collector deletes the secret with its pod", sec.Name)
	})

	// Dry runs write nothing. This is not a subtest: the subtests after it
	// use its marker pod.
	for i := range 3 {
		p, err := pods.Create(ctx, pod(fmt.Sprintf("dry-%d", i), nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || len(p.Spec.Containers) != 2 {
			t.Fatalf("dry-run pod not injected: %v", err)
		}
	}
	// A real pod admitted after the dry runs: once its Secret is written and
	// owned, the writer and the reconciler have passed the dry runs.
	marker := create(t, "marker")
	owned(t, marker)
	l, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=osm-injector"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Name != "envoy-bootstrap-"+marker.Labels["osm-proxy-uuid"] {
		var names []string
		for _, s := range l.Items {
			names = append(names, s.Name)
		}
		t.Fatalf("dry runs: secrets %v, want only the marker pod's", names)
	}

	t.Run("a secret lost to an injector restart is reissued", func(t *testing.T) {
		name := "envoy-bootstrap-" + marker.Labels["osm-proxy-uuid"]
		old, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The injector dies with the write still queued: here, it stops and
		// the Secret goes.
		stop(t, m, stack.Injector)
		if err := secrets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Started for the whole test (the mesh's), not this subtest.
		if err := m.Restart(t.Context(), stack.Injector); err != nil {
			t.Fatal(err)
		}
		sec := checkBootstrapSecret(t, marker, m.Bundle())
		if sec.UID == old.UID || string(sec.Data["tls.crt"]) == string(old.Data["tls.crt"]) {
			t.Fatal("the secret was not reissued")
		}
		owned(t, marker)
		// The Secret may be seen before the line is logged.
		eventually(t, "the reissue logged", 10*time.Second, func() error {
			if !strings.Contains(m.Proc(stack.Injector).Output(), "bootstrap secret missing; issued a new one") {
				return errors.New("the injector does not log the reissue")
			}
			return nil
		})
	})

	t.Run("an injector that cannot listen exits instead of hanging", func(t *testing.T) {
		// The same flags, so the same --listen-addr, which the running
		// injector holds; a fresh admin address.
		second, err := m.StartReplica(t.Context(), stack.Injector)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := second.Stop(30 * time.Second); err != nil {
				t.Error(err)
			}
		})
		select {
		case <-second.Exited():
		case <-time.After(60 * time.Second):
			t.Fatalf("the injector did not exit; its output:\n%s", second.Output())
		}
		if !strings.Contains(second.Output(), "listen-addr") {
			t.Fatalf("the injector exited without naming --listen-addr:\n%s", second.Output())
		}
	})

	t.Run("a pod the apiserver rejected after admission leaves no secret", func(t *testing.T) {
		w, err := secrets.Watch(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=osm-injector"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		// Admission injects it; the apiserver's validation, which runs after
		// the mutating webhooks, rejects the container name.
		bad := pod("rejected", nil)
		bad.Spec.Containers[0].Name = "Not_A_DNS_Label"
		_, err = pods.Create(ctx, bad, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) {
			t.Fatalf("create: %v, want invalid", err)
		}
		// The held Secret is dropped after the 1s owner wait; watch well
		// past it.
		deadline := time.After(4 * time.Second)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch closed")
				}
				if sec, isSecret := ev.Object.(*corev1.Secret); isSecret && ev.Type == watch.Added &&
					sec.Name != "envoy-bootstrap-"+marker.Labels["osm-proxy-uuid"] {
					t.Fatalf("the rejected pod's secret %s was written", sec.Name)
				}
			case <-deadline:
				return
			}
		}
	})
	t.Run("the writer and the reconciler report their work", func(t *testing.T) {
		// The injector restarted above: since then it reissued the marker's
		// Secret (owned from the start, so no owner patch) and dropped the
		// rejected pod's; one more pod gives it an asynchronous write.
		owned(t, create(t, "after-restart"))
		// The test may see a deletion before the injector has counted it.
		eventually(t, "the injector's metrics", 10*time.Second, func() error {
			metrics, err := scrapeMetrics("http://" + m.AdminAddr(stack.Injector) + "/metrics")
			if err != nil {
				return err
			}
			for _, want := range []struct {
				name   string
				labels []string
				min    float64
			}{
				{"osm_injector_bootstrap_write_seconds_count", []string{`outcome="written"`}, 1},
				{"osm_injector_bootstrap_reconciled_total", []string{`action="recreated"`, `error="false"`}, 1},
				{"osm_injector_bootstrap_dropped_total", nil, 1},
				{"osm_injector_bootstrap_queue_depth", nil, 0},
			} {
				if !hasSample(metrics, want.name, want.labels, want.min) {
					return fmt.Errorf("no %s%v sample of at least %v in:\n%s", want.name, want.labels, want.min, grepLines(metrics, "osm_injector_bootstrap"))
				}
			}
			return nil
		})
	})
}

func scrapeMetrics(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// hasSample reports whether metrics has a sample of name, carrying all of
// labels, of at least min.
func hasSample(metrics, name string, labels []string, min float64) bool {
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		i := strings.LastIndex(line, " ")
		if v, err := strconv.ParseFloat(line[i+1:], 64); all && err == nil && v >= min {
			return true
		}
	}
	return false
}

func grepLines(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
