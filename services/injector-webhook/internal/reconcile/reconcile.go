// Package reconcile keeps the injector's bootstrap Secrets in step with the
// pods that mount them, which makes the asynchronous Secret write of
// admission restart-safe and the Secrets garbage-collected.
//
// Admission names each pod's bootstrap Secret envoy-bootstrap-<proxy UUID>
// and labels the pod osm-proxy-uuid=<proxy UUID>; the Secret carries the
// same label and app.kubernetes.io/managed-by=osm-injector. The Reconciler
// watches both (pods through a label-filtered informer, Secrets through a
// metadata-only informer, so no private key is cached) and drives one
// workqueue keyed by namespace/proxy UUID, in the sample-controller
// pattern. Each sync looks at the pods and the Secret of one proxy:
//
//  1. Pods but no Secret: the write was lost (the injector restarted with
//     the Secret still queued, or the writer gave up). Once the oldest pod
//     is MissingGrace old, which leaves the writer its retries, the
//     Reconciler issues a fresh certificate for the pod's identity and
//     creates the Secret. Until then the kubelet keeps retrying the
//     volume mount, so the pod just waits. Terminating and finished pods
//     get nothing.
//  2. Pods and a Secret that does not name them all as owners: it adds an
//     ownerReference (by UID) to each pod, so that Kubernetes' garbage
//     collector deletes the Secret once the last pod is gone. Admission
//     cannot set it, because a pod has no UID until after admission; with
//     a Claimer (the writer holding admission's Secrets until their pod
//     appears) the Secret is created owned, and this step is left for
//     Secrets written by older injectors without an owner and for pods
//     that share a proxy UUID.
//  3. A Secret with no owner and no pod (admission succeeded but the
//     apiserver then rejected the pod, or the pod was deleted before step
//     2): once it is OrphanGrace old, and after the apiserver itself
//     confirms no such pod exists, the Secret is deleted with UID and
//     resourceVersion preconditions.
//  4. Live pods and their Secret: the certificate is renewed (renew.go).
//     Each Secret's certificate is reissued at half of its lifetime
//     (webhook.RenewAt, well before two thirds), for the identity of the
//     pod that mounts it, and at once when the trust bundle changes: ca.crt
//     is rewritten, and the certificate reissued too if the bundle no
//     longer verifies it. The lifetime is read from the Secret (annotations
//     that mirror its certificate, or the certificate itself), so a restart
//     loses no schedule. The sidecar reads the files through file-based
//     SDS and picks them up without a restart.
//
// Start runs the informers on every replica: they feed the Claimer, and a
// standby that takes over has its caches warm. The workers that act run
// only under Lead, which the injector calls on the one replica holding its
// Lease (package elect): renewing on every replica would issue one
// certificate per replica. Every step is still idempotent, so a former
// leader's last call, or two leaders for the moment of a takeover, do no
// harm: a create that finds the Secret, an update or patch that loses a
// resourceVersion race or a delete whose precondition fails is retried or
// dropped. The Reconciler needs pods list/watch and secrets list, watch,
// get, create, update, patch and delete.
package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// Claimer takes the ownerReferences of a Secret admission stored but the
// writer holds until its pod appears (secrets.Writer.Claim).
type Claimer interface {
	Claim(namespace, name string, owners []metav1.OwnerReference) bool
}

// Maker issues the certificates and builds the bootstrap Secret of a proxy,
// or of a proxyless gRPC pod (webhook.Webhook.BootstrapSecret).
type Maker interface {
	BootstrapSecret(ctx context.Context, ns, sa, proxyUUID string, proxyless bool, probes []inject.OriginalProbe) (*corev1.Secret, error)
}

// Issuer issues the certificates a bootstrap Secret holds, for service
// account sa of its namespace, and puts them into it (webhook.Certifier):
// the xDS client certificate, and for a proxyless gRPC pod's Secret also
// the service certificate.
type Issuer interface {
	Certify(ctx context.Context, s *corev1.Secret, sa string) error
}

var (
	_ Maker  = (*webhook.Webhook)(nil)
	_ Issuer = (*webhook.Certifier)(nil)
)

// Options configure a Reconciler.
type Options struct {
	Client   kubernetes.Interface
	Metadata metadata.Interface
	Maker    Maker
	// Claimer, when set, is told of each live injected pod the pod
	// informer adds, so that the Secret admission stored for it is created
	// with the pod as its owner.
	Claimer Claimer
	Log     *logrus.Entry
	// MissingGrace is how old a pod without its Secret must be before a new
	// Secret is issued; default 30 s.
	MissingGrace time.Duration
	// OrphanGrace is how old a Secret with no pod and no owner must be
	// before it is deleted; default 5 min.
	OrphanGrace time.Duration
	// Workers run syncs concurrently; default 2.
	Workers int
	// Resync is the informers' resync period; default 10 min.
	Resync time.Duration
	// Issuer, when set, renews the certificates of the Secrets (step 4).
	Issuer Issuer
	// Roots, when set, is the current trust bundle, an error while none
	// is known; RootsChanged receives a value after each change.
	Roots        func() ([]byte, error)
	RootsChanged <-chan struct{}
	// Observe, when set, is told each action taken: "recreated", "owned",
	// "orphan-deleted", "renewed" (a new certificate) or "trust-updated"
	// (ca.crt rewritten), with its error.
	Observe func(action string, err error)
}

// Reconciler repairs and garbage-collects bootstrap Secrets; see the
// package doc.
type Reconciler struct {
	o       Options
	pods    cache.SharedIndexInformer
	secrets cache.SharedIndexInformer
	// term is the workqueue of the current lead; nil while standing by.
	term    atomic.Pointer[term]
	synced  atomic.Bool
	leading atomic.Bool
	now     func() time.Time
}

// term is one lead's workqueue.
type term struct {
	q workqueue.TypedRateLimitingInterface[string]
}

const indexProxy = "proxy"

// New returns a Reconciler; call Start to run it.
func New(o Options) *Reconciler {
	if o.MissingGrace <= 0 {
		o.MissingGrace = 30 * time.Second
	}
	if o.OrphanGrace <= 0 {
		o.OrphanGrace = 5 * time.Minute
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	r := &Reconciler{o: o, now: time.Now}
	podFactory := informers.NewSharedInformerFactoryWithOptions(o.Client, o.Resync,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = layout.LabelProxyUUID }))
	r.pods = podFactory.Core().V1().Pods().Informer()
	secretFactory := metadatainformer.NewFilteredSharedInformerFactory(o.Metadata, o.Resync, metav1.NamespaceAll,
		func(lo *metav1.ListOptions) {
			lo.LabelSelector = webhook.LabelManagedBy + "=" + webhook.ManagedBy + "," + layout.LabelProxyUUID
		})
	r.secrets = secretFactory.ForResource(corev1.SchemeGroupVersion.WithResource("secrets")).Informer()
	return r
}

// HasSynced reports whether both informers have listed once; until then
// the Reconciler takes no action.
func (r *Reconciler) HasSynced() bool { return r.synced.Load() }

// Leading reports whether Lead runs.
func (r *Reconciler) Leading() bool { return r.leading.Load() }

// Start runs the informers until ctx ends; Lead runs the workers.
func (r *Reconciler) Start(ctx context.Context) error {
	// Keep only what a sync reads: the cache holds every injected pod of
	// the cluster.
	if err := r.pods.SetTransform(slimPod); err != nil {
		return err
	}
	if err := r.secrets.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			m.ManagedFields = nil
		}
		return obj, nil
	}); err != nil {
		return err
	}
	if err := r.pods.AddIndexers(cache.Indexers{indexProxy: func(obj any) ([]string, error) {
		m, err := metaOf(obj)
		if err != nil {
			return nil, err
		}
		return []string{m.GetNamespace() + "/" + m.GetLabels()[layout.LabelProxyUUID]}, nil
	}}); err != nil {
		return err
	}
	if r.o.Claimer != nil {
		// A pod is stored only after admission has stored its Secret, so
		// its first event, an Add (also in the informer's initial list),
		// is the one that finds the Secret held.
		if _, err := r.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: r.claim}); err != nil {
			return err
		}
	}
	for _, inf := range []cache.SharedIndexInformer{r.pods, r.secrets} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    r.enqueue,
			UpdateFunc: func(_, obj any) { r.enqueue(obj) },
			DeleteFunc: r.enqueue,
		}); err != nil {
			return err
		}
	}
	// The informers end with ctx; Start returns after them.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.pods.Run(ctx.Done()) })
	wg.Go(func() { r.secrets.Run(ctx.Done()) })
	if !cache.WaitForCacheSync(ctx.Done(), r.pods.HasSynced, r.secrets.HasSynced) {
		return nil // ctx ended
	}
	r.synced.Store(true)
	r.o.Log.WithContext(ctx).WithFields(logrus.Fields{"pods": len(r.pods.GetStore().ListKeys()),
		"secrets": len(r.secrets.GetStore().ListKeys())}).Info("bootstrap secret reconciler synced")
	<-ctx.Done()
	return nil
}

// Lead runs the workers, which act on the Secrets, until ctx ends: while
// this replica leads. It waits for Start's informers to sync, then looks
// at every proxy once; the events of the standby time are not needed.
// Lead may be called again after it returned (a lead regained).
func (r *Reconciler) Lead(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), r.HasSynced) {
		return nil // ctx ended
	}
	t := &term{q: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "bootstrap-secrets"})}
	r.term.Store(t)
	for _, inf := range []cache.SharedIndexInformer{r.secrets, r.pods} {
		for _, obj := range inf.GetStore().List() {
			r.enqueue(obj)
		}
	}
	r.leading.Store(true)
	r.o.Log.WithContext(ctx).Info("leading: reconciling and renewing bootstrap secrets")
	var wg sync.WaitGroup
	for range r.o.Workers {
		wg.Go(func() {
			for r.next(ctx, t.q) {
			}
		})
	}
	wg.Go(func() { r.watchRoots(ctx) })
	<-ctx.Done()
	r.term.CompareAndSwap(t, nil)
	t.q.ShutDown()
	wg.Wait()
	r.leading.Store(false)
	r.o.Log.WithContext(ctx).Info("no longer leading: bootstrap secrets left to the leader")
	return nil
}

// later looks at key again after d, while this lead lasts.
func (r *Reconciler) later(key string, d time.Duration) {
	if t := r.term.Load(); t != nil {
		t.q.AddAfter(key, d)
	}
}

// slimPod drops what no sync reads from a pod.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	var annotations map[string]string
	if v, ok := p.Annotations[inject.AnnotationProbes]; ok {
		annotations = map[string]string{inject.AnnotationProbes: v}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
			Labels: map[string]string{layout.LabelProxyUUID: p.Labels[layout.LabelProxyUUID]}, Annotations: annotations,
		},
		Spec:   corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T is not a Kubernetes object", obj)
	}
	return m, nil
}

// claim hands a live pod's reference to the Claimer for its Secret.
func (r *Reconciler) claim(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.DeletionTimestamp != nil || p.UID == "" {
		return
	}
	if uuid := p.Labels[layout.LabelProxyUUID]; uuid != "" {
		r.o.Claimer.Claim(p.Namespace, inject.BootstrapSecretName(uuid), ownerRefs(nil, []*corev1.Pod{p}))
	}
}

func (r *Reconciler) enqueue(obj any) {
	m, err := metaOf(obj)
	if err != nil {
		return
	}
	t := r.term.Load()
	if t == nil {
		return // standing by: Lead looks at everything when it starts
	}
	if uuid := m.GetLabels()[layout.LabelProxyUUID]; uuid != "" {
		t.q.Add(m.GetNamespace() + "/" + uuid)
	}
}

func (r *Reconciler) next(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	if ctx.Err() != nil {
		return false // the lead ended: what is left in q is not acted on
	}
	if err := r.sync(ctx, key); err != nil {
		// A conflict is another replica (or the writer) acting on the same
		// Secret: expected, retried quietly.
		if ctx.Err() == nil && !apierrors.IsConflict(err) {
			r.o.Log.WithContext(ctx).WithError(err).WithField("key", key).Warn("bootstrap secret not reconciled; retrying")
		}
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}

// sync reconciles the Secret of one proxy, key "namespace/proxy-uuid".
func (r *Reconciler) sync(ctx context.Context, key string) error {
	ns, uuid, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	name := inject.BootstrapSecretName(uuid)
	objs, err := r.pods.GetIndexer().ByIndex(indexProxy, key)
	if err != nil {
		return err
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	var live []*corev1.Pod
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		pods = append(pods, p)
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			live = append(live, p)
		}
	}
	obj, exists, err := r.secrets.GetStore().GetByKey(ns + "/" + name)
	if err != nil {
		return err
	}
	if !exists {
		return r.recreate(ctx, key, ns, uuid, live)
	}
	sec, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || sec.DeletionTimestamp != nil {
		return nil
	}
	if len(pods) > 0 {
		if err := r.own(ctx, sec, pods); err != nil {
			return err
		}
		if len(live) > 0 {
			return r.renew(ctx, key, sec, oldest(live))
		}
		return nil
	}
	return r.collect(ctx, key, sec)
}

// recreate issues a new Secret for live pods whose Secret does not exist.
func (r *Reconciler) recreate(ctx context.Context, key, ns, uuid string, live []*corev1.Pod) error {
	if len(live) == 0 {
		return nil
	}
	oldest := oldest(live)
	if wait := r.o.MissingGrace - r.now().Sub(oldest.CreationTimestamp.Time); wait > 0 {
		r.later(key, wait)
		return nil
	}
	name := inject.BootstrapSecretName(uuid)
	// The informer may lag: ask the apiserver before issuing.
	if _, err := r.o.Metadata.Resource(corev1.SchemeGroupVersion.WithResource("secrets")).Namespace(ns).
		Get(ctx, name, metav1.GetOptions{}); err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	probes, err := inject.InjectedProbes(oldest)
	if err != nil {
		// The sidecar still gets its identity; the probes it cannot serve
		// fail visibly on the pod.
		r.o.Log.WithContext(ctx).WithError(err).WithFields(logrus.Fields{"namespace": ns, "name": oldest.Name}).
			Warn("probes of the injected pod unreadable; bootstrap rebuilt without them")
	}
	// A pod admitted as proxyless has a valid annotation: admission
	// refuses others.
	proxyless, _ := inject.Proxyless(oldest)
	sec, err := r.o.Maker.BootstrapSecret(ctx, ns, oldest.Spec.ServiceAccountName, uuid, proxyless, probes)
	if err != nil {
		r.observe("recreated", err)
		return err
	}
	sec.OwnerReferences = ownerRefs(nil, live)
	_, err = r.o.Client.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // written meanwhile; its event brings us back to own it
	}
	r.observe("recreated", err)
	if err != nil {
		return fmt.Errorf("create bootstrap secret %s/%s: %w", ns, name, err)
	}
	r.o.Log.WithContext(ctx).WithFields(logrus.Fields{"namespace": ns, "name": name, "pod": oldest.Name}).
		Info("bootstrap secret missing; issued a new one")
	return nil
}

// oldest is the pod of pods created first.
func oldest(pods []*corev1.Pod) *corev1.Pod {
	o := pods[0]
	for _, p := range pods[1:] {
		if p.CreationTimestamp.Before(&o.CreationTimestamp) {
			o = p
		}
	}
	return o
}

// own makes every pod that mounts sec an owner of it.
func (r *Reconciler) own(ctx context.Context, sec *metav1.PartialObjectMetadata, pods []*corev1.Pod) error {
	refs := ownerRefs(sec.OwnerReferences, pods)
	if len(refs) == len(sec.OwnerReferences) {
		return nil
	}
	// A merge patch replaces the list; the resourceVersion makes it fail
	// rather than overwrite a concurrent change.
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": sec.ResourceVersion, "ownerReferences": refs}})
	if err != nil {
		return err
	}
	_, err = r.o.Metadata.Resource(corev1.SchemeGroupVersion.WithResource("secrets")).Namespace(sec.Namespace).
		Patch(ctx, sec.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		return err // changed meanwhile: retried from the fresh cache
	}
	r.observe("owned", err)
	if err != nil {
		return fmt.Errorf("set the owners of bootstrap secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return nil
}

// collect deletes sec when it has no owner and no pod and is older than
// OrphanGrace.
func (r *Reconciler) collect(ctx context.Context, key string, sec *metav1.PartialObjectMetadata) error {
	if len(sec.OwnerReferences) > 0 {
		return nil // the garbage collector deletes it after its owners
	}
	if wait := r.o.OrphanGrace - r.now().Sub(sec.CreationTimestamp.Time); wait > 0 {
		r.later(key, wait)
		return nil
	}
	// The pod informer may lag behind a pod just created: ask the
	// apiserver before deleting.
	uuid := sec.Labels[layout.LabelProxyUUID]
	l, err := r.o.Client.CoreV1().Pods(sec.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: layout.LabelProxyUUID + "=" + uuid, Limit: 1})
	if err != nil {
		return err
	}
	if len(l.Items) > 0 {
		return nil // the pod's event brings us back to own it
	}
	uid, rv := sec.UID, sec.ResourceVersion
	err = r.o.Client.CoreV1().Secrets(sec.Namespace).Delete(ctx, sec.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		return err // changed meanwhile (an owner set?): looked at again
	}
	r.observe("orphan-deleted", err)
	if err != nil {
		return fmt.Errorf("delete orphaned bootstrap secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	r.o.Log.WithContext(ctx).WithFields(logrus.Fields{"namespace": sec.Namespace, "name": sec.Name}).
		Info("orphaned bootstrap secret deleted")
	return nil
}

// ownerRefs returns refs plus a reference to each pod not yet in it.
func ownerRefs(refs []metav1.OwnerReference, pods []*corev1.Pod) []metav1.OwnerReference {
	out := append([]metav1.OwnerReference(nil), refs...)
	have := map[types.UID]bool{}
	for _, ref := range refs {
		have[ref.UID] = true
	}
	for _, p := range pods {
		if have[p.UID] || p.UID == "" {
			continue
		}
		have[p.UID] = true
		out = append(out, metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID})
	}
	return out
}

func (r *Reconciler) observe(action string, err error) {
	if r.o.Observe != nil {
		r.o.Observe(action, err)
	}
}
