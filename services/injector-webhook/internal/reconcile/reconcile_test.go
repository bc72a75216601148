package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/metadata"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
	"github.com/openservicemesh/osm/tests/kube"
)

// These tests run the Reconciler against a real apiserver, whose
// kube-controller-manager runs the garbage collector. The certificate is
// faked here; tests/e2e checks a recreated Secret's certificate issued by
// the real cert-authority.

var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, false)) }

// maker is a hand-written fake of Maker.
type maker struct {
	mu    sync.Mutex
	calls []string // namespace/sa/uuid/probe count[/proxyless]
}

func (m *maker) BootstrapSecret(_ context.Context, ns, sa, uuid string, proxyless bool, probes []inject.OriginalProbe) (*corev1.Secret, error) {
	m.mu.Lock()
	call := fmt.Sprintf("%s/%s/%s/%d", ns, sa, uuid, len(probes))
	if proxyless {
		call += "/proxyless"
	}
	m.calls = append(m.calls, call)
	m.mu.Unlock()
	return bootstrapSecret(ns, uuid), nil
}

// made returns the calls for namespace ns: the reconciler watches the
// whole cluster, where other tests' namespaces may linger.
func (m *maker) made(ns string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, c := range m.calls {
		if strings.HasPrefix(c, ns+"/") {
			out = append(out, c)
		}
	}
	return out
}

func bootstrapSecret(ns, uuid string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: inject.BootstrapSecretName(uuid),
			Labels: map[string]string{layout.LabelProxyUUID: uuid, webhook.LabelManagedBy: webhook.ManagedBy}},
		Data: map[string][]byte{"tls.crt": []byte("fake")},
	}
}

type actions struct {
	mu  sync.Mutex
	got map[string]int
}

func (a *actions) observe(action string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		action += "-error"
	}
	a.got[action]++
}

func (a *actions) count(action string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.got[action]
}

// observedOnce waits until action has been observed exactly once.
func (a *actions) observedOnce(t *testing.T, action string) {
	t.Helper()
	apptest.Eventually(t, action+" observed once", 10*time.Second, func() error {
		if n := a.count(action); n != 1 {
			return fmt.Errorf("%s observed %d times", action, n)
		}
		return nil
	})
}

// start runs a Reconciler, leading, until the test ends.
func start(t *testing.T, o Options) (*maker, *actions) {
	t.Helper()
	mk, acts, r := startStandby(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Lead(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return mk, acts
}

// startStandby runs a Reconciler's informers, not leading, until the test
// ends.
func startStandby(t *testing.T, o Options) (*maker, *actions, *Reconciler) {
	t.Helper()
	mk, acts := &maker{}, &actions{got: map[string]int{}}
	md, err := metadata.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	o.Client, o.Metadata, o.Maker, o.Log, o.Observe = cluster.Clientset(), md, mk, logrus.NewEntry(log), acts.observe
	r := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return r.HasSynced(), nil }); err != nil {
		t.Fatal("reconciler not synced")
	}
	return mk, acts, r
}

func injectedPod(name, uuid string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{layout.LabelProxyUUID: uuid},
			Annotations: map[string]string{inject.AnnotationInjected: "true",
				inject.AnnotationProbes: `[{"container":"app","kind":"readiness","port":8080,"path":"/ready","listenPort":15902,"probePath":"/osm-readiness-probe"}]`}},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func ownedBy(sec *corev1.Secret, pod *corev1.Pod) error {
	for _, ref := range sec.OwnerReferences {
		if ref.UID == pod.UID && ref.Kind == "Pod" && ref.Name == pod.Name {
			return nil
		}
	}
	return fmt.Errorf("secret owners %v do not include pod %s (%s)", sec.OwnerReferences, pod.Name, pod.UID)
}

func TestMissingSecretIsRecreatedForItsPod(t *testing.T) {
	ns := cluster.Namespace(t, "missing", nil)
	cs := cluster.Clientset()
	_, acts := start(t, Options{MissingGrace: 500 * time.Millisecond, OrphanGrace: time.Hour})
	// A pod injected by an injector that died before writing the Secret.
	pod, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("lost", "uuid-lost"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sec *corev1.Secret
	apptest.Eventually(t, "the bootstrap secret recreated", 30*time.Second, func() error {
		sec, err = cs.CoreV1().Secrets(ns).Get(t.Context(), "envoy-bootstrap-uuid-lost", metav1.GetOptions{})
		return err
	})
	if err := ownedBy(sec, pod); err != nil {
		t.Fatal(err)
	}
	acts.observedOnce(t, "recreated")
	// Deleting it again (say, by hand) brings it back.
	if err := cs.CoreV1().Secrets(ns).Delete(t.Context(), sec.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the bootstrap secret recreated again", 30*time.Second, func() error {
		again, err := cs.CoreV1().Secrets(ns).Get(t.Context(), sec.Name, metav1.GetOptions{})
		if err == nil && again.UID == sec.UID {
			return errors.New("still the deleted secret")
		}
		return err
	})
}

func TestMakerGetsThePodIdentityAndProbes(t *testing.T) {
	ns := cluster.Namespace(t, "maker", nil)
	cs := cluster.Clientset()
	mk, _ := start(t, Options{MissingGrace: time.Millisecond, OrphanGrace: time.Hour})
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bookstore"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := injectedPod("bookstore", "uuid-maker")
	p.Spec.ServiceAccountName = "bookstore"
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "a secret made", 30*time.Second, func() error {
		if got := mk.made(ns); len(got) != 1 || got[0] != ns+"/bookstore/uuid-maker/1" {
			return fmt.Errorf("made %v", got)
		}
		return nil
	})
}

func TestFinishedAndYoungPodsGetNoNewSecret(t *testing.T) {
	ns := cluster.Namespace(t, "young", nil)
	cs := cluster.Clientset()
	mk, _ := start(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour})
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("young", "uuid-young"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A control proxy whose Secret is written by "admission": once the
	// reconciler owns it, it has certainly looked at the young pod too.
	ctl, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("ctl", "uuid-ctl"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), bootstrapSecret(ns, "uuid-ctl"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the control secret owned", 30*time.Second, func() error {
		sec, err := cs.CoreV1().Secrets(ns).Get(t.Context(), "envoy-bootstrap-uuid-ctl", metav1.GetOptions{})
		if err != nil {
			return err
		}
		return ownedBy(sec, ctl)
	})
	if got := mk.made(ns); len(got) != 0 {
		t.Fatalf("made %v for a pod younger than the missing grace", got)
	}
	if _, err := cs.CoreV1().Secrets(ns).Get(t.Context(), "envoy-bootstrap-uuid-young", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("young pod's secret: %v", err)
	}
}

func TestSecretIsOwnedByItsPodAndCollectedWithIt(t *testing.T) {
	ns := cluster.Namespace(t, "owned", nil)
	cs := cluster.Clientset()
	_, acts := start(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour})
	// Admission wrote the Secret; the apiserver then stored the pod.
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), bootstrapSecret(ns, "uuid-owned"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("owner", "uuid-owned"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := inject.BootstrapSecretName("uuid-owned")
	apptest.Eventually(t, "the pod owns its secret", 30*time.Second, func() error {
		sec, err := cs.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return ownedBy(sec, pod)
	})
	acts.observedOnce(t, "owned")
	// The pod has no node, so the apiserver deletes it at once; the
	// garbage collector then deletes the Secret.
	if err := cs.CoreV1().Pods(ns).Delete(t.Context(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the garbage collector deletes the secret", 90*time.Second, func() error {
		_, err := cs.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("secret still there (%v)", err)
	})
	if n := acts.count("recreated"); n != 0 {
		t.Fatalf("the secret of a deleted pod was recreated %d times", n)
	}
}

func TestOrphanSecretIsDeletedAfterTheGrace(t *testing.T) {
	ns := cluster.Namespace(t, "orphan", nil)
	cs := cluster.Clientset()
	const grace = 2 * time.Second
	_, acts := start(t, Options{MissingGrace: time.Hour, OrphanGrace: grace})
	created := time.Now()
	orphan, err := cs.CoreV1().Secrets(ns).Create(t.Context(), bootstrapSecret(ns, "uuid-orphan"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A Secret that is not the injector's is never touched.
	foreign := bootstrapSecret(ns, "uuid-foreign")
	delete(foreign.Labels, webhook.LabelManagedBy)
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the orphan deleted", 60*time.Second, func() error {
		_, err := cs.CoreV1().Secrets(ns).Get(t.Context(), orphan.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("orphan still there (%v)", err)
	})
	// creationTimestamp has a one-second resolution.
	if age := time.Since(created); age < grace-time.Second {
		t.Fatalf("orphan deleted after %s, before the %s grace", age, grace)
	}
	acts.observedOnce(t, "orphan-deleted")
	if _, err := cs.CoreV1().Secrets(ns).Get(t.Context(), foreign.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("a secret without the injector's label: %v", err)
	}
}

func TestTwoReplicasAgree(t *testing.T) {
	ns := cluster.Namespace(t, "replicas", nil)
	cs := cluster.Clientset()
	o := Options{MissingGrace: 200 * time.Millisecond, OrphanGrace: time.Hour}
	mk1, _ := start(t, o)
	mk2, _ := start(t, o)
	const n = 5
	var pods []*corev1.Pod
	for i := range n {
		// Odd pods have their Secret written by "admission", even ones lost it.
		uuid := fmt.Sprintf("uuid-%d", i)
		if i%2 == 1 {
			if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), bootstrapSecret(ns, uuid), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		p, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod(fmt.Sprintf("pod-%d", i), uuid), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	for _, p := range pods {
		apptest.Eventually(t, "secret owned by "+p.Name, 30*time.Second, func() error {
			sec, err := cs.CoreV1().Secrets(ns).Get(t.Context(), inject.BootstrapSecretName(p.Labels[layout.LabelProxyUUID]), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(sec.OwnerReferences) != 1 {
				return fmt.Errorf("owners %v, want exactly the pod", sec.OwnerReferences)
			}
			return ownedBy(sec, p)
		})
	}
	l, err := cs.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != n {
		t.Fatalf("%d secrets for %d pods", len(l.Items), n)
	}
	// Each lost Secret was issued at least once, by either replica (both may
	// issue; one create wins).
	if made := len(mk1.made(ns)) + len(mk2.made(ns)); made < (n+1)/2 {
		t.Fatalf("%d secrets issued for %d lost ones", made, (n+1)/2)
	}
}

func TestSlimPodKeepsWhatASyncReads(t *testing.T) {
	now := metav1.Now()
	p := injectedPod("slim", "uuid-slim")
	p.Namespace, p.UID, p.ResourceVersion, p.CreationTimestamp, p.DeletionTimestamp = "ns", "uid-1", "7", now, &now
	p.Labels["app"] = "bookstore"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	p.Status.Phase = corev1.PodRunning
	obj, err := slimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	s := obj.(*corev1.Pod)
	probes, err := inject.InjectedProbes(s)
	if err != nil || len(probes) != 1 {
		t.Fatalf("probes %v (%v)", probes, err)
	}
	if s.Name != "slim" || s.Namespace != "ns" || s.UID != "uid-1" || s.ResourceVersion != "7" || !s.CreationTimestamp.Equal(&now) ||
		s.DeletionTimestamp == nil || s.Labels[layout.LabelProxyUUID] != "uuid-slim" || s.Spec.ServiceAccountName != "default" ||
		s.Status.Phase != corev1.PodRunning {
		t.Fatalf("slim pod lost what a sync reads: %+v", s)
	}
	if len(s.Spec.Containers) != 0 || len(s.ManagedFields) != 0 || len(s.Labels) != 1 || len(s.Annotations) != 1 {
		t.Fatalf("slim pod keeps more than a sync reads: %+v", s)
	}
}

// claimer is a hand-written fake of Claimer.
type claimer struct {
	mu     sync.Mutex
	claims map[string][]metav1.OwnerReference // namespace/name -> owners of the last claim
}

func (c *claimer) Claim(ns, name string, owners []metav1.OwnerReference) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.claims[ns+"/"+name] = owners
	return true
}

func (c *claimer) owners(ns, name string) ([]metav1.OwnerReference, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.claims[ns+"/"+name]
	return o, ok
}

func TestNewPodClaimsItsHeldSecret(t *testing.T) {
	ns := cluster.Namespace(t, "claim", nil)
	cl := &claimer{claims: map[string][]metav1.OwnerReference{}}
	start(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour, Claimer: cl})
	pod, err := cluster.Clientset().CoreV1().Pods(ns).Create(t.Context(), injectedPod("app", "uuid-claim"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the pod's claim", 30*time.Second, func() error {
		owners, ok := cl.owners(ns, inject.BootstrapSecretName("uuid-claim"))
		if !ok {
			return errors.New("no claim")
		}
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owners}}
		return ownedBy(sec, pod)
	})
	// A terminating pod claims nothing: its Secret would be created for a
	// pod about to go.
	if err := cluster.Clientset().CoreV1().Pods(ns).Delete(t.Context(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: ns, UID: "u",
		Labels: map[string]string{layout.LabelProxyUUID: "uuid-terminating"}, DeletionTimestamp: &metav1.Time{Time: time.Now()}}}
	r := &Reconciler{o: Options{Claimer: cl}}
	r.claim(gone)
	if _, ok := cl.owners(ns, inject.BootstrapSecretName("uuid-terminating")); ok {
		t.Fatal("a terminating pod claimed its secret")
	}
}

// TestOnlyTheLeaderActs: issue 15, item 10. Every injector replica runs the
// informers (the writer's claims need them), but only under Lead does the
// Reconciler act; a lead that ends stops it acting.
func TestOnlyTheLeaderActs(t *testing.T) {
	ns := cluster.Namespace(t, "standby", nil)
	cs := cluster.Clientset()
	_, acts, r := startStandby(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour})
	unowned := func(uuid string) *corev1.Pod {
		t.Helper()
		if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), bootstrapSecret(ns, uuid), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("pod-"+uuid, uuid), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	owned := func(p *corev1.Pod) error {
		sec, err := cs.CoreV1().Secrets(ns).Get(t.Context(), inject.BootstrapSecretName(p.Labels[layout.LabelProxyUUID]), metav1.GetOptions{})
		if err != nil {
			return err
		}
		return ownedBy(sec, p)
	}
	first := unowned("uuid-first")
	time.Sleep(time.Second)
	if owned(first) == nil || acts.count("owned") != 0 || r.Leading() {
		t.Fatal("a standby acted")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Lead(ctx) }()
	// What arrived while standing by is looked at when the lead starts.
	apptest.Eventually(t, "the leader owns the first secret", 30*time.Second, func() error { return owned(first) })
	if !r.Leading() {
		t.Fatal("acting, but not Leading")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.Leading() {
		t.Fatal("Leading after the lead ended")
	}
	second := unowned("uuid-second")
	time.Sleep(time.Second)
	if owned(second) == nil {
		t.Fatal("a former leader acted")
	}
}
