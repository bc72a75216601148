package service

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// metricOr0 reads a sample from admin's /metrics; a sample not exported
// yet counts 0.
func metricOr0(t *testing.T, admin, name, match string) float64 {
	t.Helper()
	text, err := apptest.Metrics(admin)
	if err != nil {
		t.Fatal(err)
	}
	v, err := apptest.SampleValue(text, name, match)
	if err != nil && strings.Contains(err.Error(), "no "+name) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// unownedProxies creates n bootstrap Secrets without an owner, and their
// pods: each has to be made an owner by the reconciler.
func unownedProxies(t *testing.T, ns, prefix string, n int) []*corev1.Pod {
	t.Helper()
	cs := cluster.Clientset()
	var pods []*corev1.Pod
	for i := range n {
		uuid := fmt.Sprintf("%s-%d", prefix, i)
		labels := map[string]string{layout.LabelProxyUUID: uuid}
		if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: inject.BootstrapSecretName(uuid),
			Labels: map[string]string{layout.LabelProxyUUID: uuid, webhook.LabelManagedBy: webhook.ManagedBy}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p, err := cs.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uuid, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	return pods
}

// allOwned waits until each pod owns its bootstrap Secret.
func allOwned(t *testing.T, pods []*corev1.Pod) {
	t.Helper()
	apptest.Eventually(t, "every secret owned by its pod", 30*time.Second, func() error {
		for _, p := range pods {
			sec, err := cluster.Clientset().CoreV1().Secrets(p.Namespace).Get(t.Context(), inject.BootstrapSecretName(p.Labels[layout.LabelProxyUUID]), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != p.UID {
				return fmt.Errorf("secret %s owners %v", sec.Name, sec.OwnerReferences)
			}
		}
		return nil
	})
}

// TestOneReplicaReconcilesAndAStandbyTakesOver is issue 15, item 10: every
// injector replica ran the reconciler (and would run the renewal, one
// certificate per replica). Two injectors share a Lease: exactly one
// reconciles; when it stops without giving the Lease up (as a crash), the
// other takes over within the lease duration and reconciles.
func TestOneReplicaReconcilesAndAStandbyTakesOver(t *testing.T) {
	const leaseDuration = 2 * time.Second
	ca := startFakeCA(t)
	cp := cluster.Namespace(t, "osm-cp", nil)
	ns := cluster.Namespace(t, "elected", nil)
	type injector struct {
		name, admin string
		cancel      context.CancelFunc
		res         <-chan error
		out         fmt.Stringer
	}
	var injectors []*injector
	for _, name := range []string{"injector-a", "injector-b"} {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		in := &injector{name: name, admin: apptest.FreeAddr(t), cancel: cancel}
		_, in.res, in.out = startInjector(ctx, t, ca, "", apptest.FreeAddr(t), in.admin,
			"--namespace", cp, "--pod-name", name, "--lease-name", "osm-injector-elect-test",
			"--lease-duration", leaseDuration.String(), "--renew-deadline", "1s", "--retry-period", "250ms", "--release-lease=false")
		injectors = append(injectors, in)
	}
	leaderOf := func() (*injector, error) {
		var leaders []*injector
		for _, in := range injectors {
			if in.cancel == nil {
				continue // stopped
			}
			if metricOr0(t, in.admin, "osm_injector_leader", "") == 1 {
				leaders = append(leaders, in)
			}
		}
		if len(leaders) != 1 {
			return nil, fmt.Errorf("%d leaders", len(leaders))
		}
		return leaders[0], nil
	}
	var lead *injector
	apptest.Eventually(t, "exactly one leader", 30*time.Second, func() (err error) {
		lead, err = leaderOf()
		return err
	})
	lease, err := cluster.Clientset().CoordinationV1().Leases(cp).Get(t.Context(), "osm-injector-elect-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if holder := lease.Spec.HolderIdentity; holder == nil || *holder != lead.name {
		t.Fatalf("lease held by %v, but %s says it leads", holder, lead.name)
	}

	// Exactly one reconciles: every repair is the leader's.
	const n = 10
	allOwned(t, unownedProxies(t, ns, "first", n))
	owned := `action="owned",error="false"`
	for _, in := range injectors {
		got, want := metricOr0(t, in.admin, "osm_injector_bootstrap_reconciled_total", owned), 0.0
		if in == lead {
			want = n
		}
		if got != want {
			t.Fatalf("%s (leader %v) set %v owners, want %v", in.name, in == lead, got, want)
		}
	}

	// The leader stops without releasing the Lease; the standby takes over.
	stopped := time.Now()
	lead.cancel()
	apptest.Stopped(t, lead.res, lead.out)
	lead.cancel = nil
	var next *injector
	apptest.Eventually(t, "the standby leads", 30*time.Second, func() (err error) {
		next, err = leaderOf()
		return err
	})
	takeover := time.Since(stopped)
	t.Logf("%s took over %s after %s stopped (lease duration %s)", next.name, takeover.Round(10*time.Millisecond), lead.name, leaseDuration)
	if takeover > leaseDuration+2*time.Second {
		t.Fatalf("takeover took %s, over the lease duration %s plus 2 s", takeover, leaseDuration)
	}
	allOwned(t, unownedProxies(t, ns, "second", 3))
	if got := metricOr0(t, next.admin, "osm_injector_bootstrap_reconciled_total", owned); got != 3 {
		t.Fatalf("the new leader set %v owners, want 3", got)
	}
	next.cancel()
	apptest.Stopped(t, next.res, next.out)
}
