// Package watch is the smi-watcher's controller: shared informers over the
// Kubernetes, SMI and OSM kinds feed one workqueue keyed by kind, namespace
// and name, and workers normalise each object from the informer cache and
// write it into KV mesh-observed only when its bytes changed (the
// sample-controller pattern, with the KV as the "status" it converges).
//
// The informers run on every instance, so a standby stays warm. Only while
// Lead runs (the instance holds the lease) does the watcher write: Lead
// reconciles the bucket against the caches, writes a new sync epoch, and then
// keeps the bucket following the informers until its context ends.
package watch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/normalize"
)

// Store is the part of KV mesh-observed the watcher uses. *bus.Store
// implements it.
type Store interface {
	kvWriter
	kvReconciler
	kvFence
}

// kvFence claims the bucket for a term: the server then refuses the writes
// of any older one (see bus.Store.Claim).
type kvFence interface {
	Claim(ctx context.Context, term uint64, holder string) error
	Unclaim()
	Superseded(ctx context.Context) (bool, error)
	ClaimLost(ctx context.Context) (bool, error)
	Gone(ctx context.Context) (bool, error)
}

// kvWriter writes keys, skipping writes that change nothing.
type kvWriter interface {
	Put(ctx context.Context, key string, m proto.Message) (uint64, error)
	PutIfChanged(ctx context.Context, key string, m proto.Message) (uint64, bool, error)
	DeleteIfPresent(ctx context.Context, key string) (bool, error)
}

// kvReconciler reads the bucket's state on takeover.
type kvReconciler interface {
	Get(ctx context.Context, key string, m proto.Message) (uint64, error)
	Prime(ctx context.Context) ([]string, error)
	Forget()
}

var _ Store = (*bus.Store)(nil)

// Options configure a Watcher.
type Options struct {
	// Clients are the API clients; every field is required.
	Clients Clients
	// Store is KV mesh-observed.
	Store Store
	// MeshName is the mesh this watcher serves: a Namespace is meshed when
	// its openservicemesh.io/monitored-by label equals it.
	MeshName string
	// ControlPlaneNamespace is where the MeshConfig lives.
	ControlPlaneNamespace string
	// WatcherID identifies this instance in the sync marker (its pod name).
	WatcherID string
	// Workers is the number of goroutines writing to the KV; default 16.
	Workers int
	// Resync is the informers' resync period; 0 disables resyncs.
	Resync time.Duration
	// Log is the component's logger.
	Log *logrus.Entry
	// Meter records the watcher's metrics; nil records nothing.
	Meter metric.Meter
	// KindCheck is how often the watcher asks the apiserver whether it
	// serves the policy kinds it did not serve at the start; default
	// DefaultKindCheck.
	KindCheck time.Duration
	// OnMeshConfig, when set, is given each version of the MeshConfig
	// MeshConfigName in ControlPlaneNamespace as the informer reads it,
	// and nil when it is deleted (app.Runtime.ApplyObservability).
	OnMeshConfig func(mc *meshv1.MeshConfig)
	// MeshConfigName is the MeshConfig OnMeshConfig follows; required
	// with it.
	MeshConfigName string
}

// Item names one observed object: its layout kind, namespace and name.
type Item struct {
	Kind, Namespace, Name string
}

// Key is the item's key in mesh-observed.
func (it Item) Key() string {
	if it.Kind == layout.KindNamespace {
		return layout.NamespaceKey(it.Name)
	}
	return layout.ObservedKey(it.Kind, it.Namespace, it.Name)
}

// cacheKey is the item's key in its informer's store.
func (it Item) cacheKey() string {
	if it.Namespace == "" {
		return it.Name
	}
	return it.Namespace + "/" + it.Name
}

// Watcher mirrors the observed kinds into KV mesh-observed.
type Watcher struct {
	o     Options
	log   *logrus.Entry
	facts factories
	// srcs are the observed kinds' sources, replaced whole (never changed
	// in place) when a policy kind starts being served.
	srcs    atomic.Pointer[sourceSet]
	missing []osmpolicy.Kind // policy kinds not served at the start
	queue   workqueue.TypedRateLimitingInterface[Item]
	m       *metrics

	mu         sync.Mutex
	synced     bool
	active     bool
	epoch      uint64
	fenceLost  chan struct{}      // closed when the term's claim of the bucket is gone (see sync)
	eventTimes map[Item]time.Time // first unprocessed informer event per item
	present    map[string]string  // keys in the bucket (as far as the leader knows) -> kind
	pending    map[Item]struct{}  // items the takeover still has to reconcile
	pendingOK  chan struct{}      // closed when pending empties
}

// New builds a Watcher and its informers; Run starts them.
func New(o Options) (*Watcher, error) {
	c := o.Clients
	switch {
	case c.Kube == nil || c.Access == nil || c.Specs == nil || c.Split == nil || c.Dynamic == nil:
		return nil, errors.New("watch: every API client is required")
	case o.Store == nil:
		return nil, errors.New("watch: a store is required")
	case o.MeshName == "":
		return nil, errors.New("watch: the mesh name is required")
	case o.ControlPlaneNamespace == "":
		return nil, errors.New("watch: the control plane namespace is required")
	case o.Log == nil:
		return nil, errors.New("watch: a logger is required")
	case o.OnMeshConfig != nil && o.MeshConfigName == "":
		return nil, errors.New("watch: the MeshConfig's name is required with OnMeshConfig")
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.KindCheck <= 0 {
		o.KindCheck = DefaultKindCheck
	}
	w := &Watcher{
		o:   o,
		log: o.Log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[Item](),
			workqueue.TypedRateLimitingQueueConfig[Item]{}),
		eventTimes: map[Item]time.Time{},
		present:    map[string]string{},
	}
	m, err := newMetrics(o.Meter, w)
	if err != nil {
		return nil, err
	}
	w.m = m
	var order []*source
	if w.facts, order, w.missing, err = newSources(c, o.Resync, o.ControlPlaneNamespace); err != nil {
		return nil, err
	}
	if len(w.missing) > 0 {
		w.log.WithField("resources", resourceNames(w.missing)).Warn("policy kinds not served by the apiserver (their CRDs are not installed) are not watched yet; the watcher starts watching each once its CRD is installed")
	}
	set := &sourceSet{byKind: map[string]*source{}}
	for _, s := range order {
		if err := w.register(s); err != nil {
			return nil, err
		}
		set = set.with(s)
	}
	if o.OnMeshConfig != nil {
		if err := w.observeMeshConfig(set); err != nil {
			return nil, err
		}
	}
	w.srcs.Store(set)
	return w, nil
}

// sourceSet is the watcher's observed kinds: by kind, and in the order
// they were added.
type sourceSet struct {
	byKind map[string]*source
	order  []*source
}

// with is a copy of the set with s added.
func (ss *sourceSet) with(s *source) *sourceSet {
	out := &sourceSet{byKind: make(map[string]*source, len(ss.byKind)+1), order: append(ss.order[:len(ss.order):len(ss.order)], s)}
	for k, v := range ss.byKind {
		out.byKind[k] = v
	}
	out.byKind[s.kind] = s
	return out
}

// register adds the watcher's event handler to the informer of s.
func (w *Watcher) register(s *source) error {
	reg, err := s.informer.AddEventHandler(w.handler(s))
	if err != nil {
		return fmt.Errorf("watch: register %s handler: %w", s.kind, err)
	}
	s.registration = reg
	return nil
}

// addSource starts watching the kind of s while the watcher runs: the
// source joins the set before its informer starts, so that every event of
// its initial list finds it; while leading, each of its objects is then
// written as it arrives.
func (w *Watcher) addSource(ctx context.Context, s *source) error {
	if err := w.register(s); err != nil {
		return err
	}
	w.srcs.Store(w.srcs.Load().with(s))
	w.facts.policy.Start(ctx.Done()) // starts only the informers not yet started
	return nil
}

// Run starts the informers and the workers, waits until every informer has
// synced, and then blocks until ctx ends. It returns an error if the caches
// cannot sync.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.facts.shutdown()
	w.facts.start(ctx.Done())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer w.queue.ShutDown() // runs before wg.Wait, so the workers end
	for range w.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.processNext(ctx) {
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.followKinds(ctx, w.o.KindCheck)
	}()
	if !w.waitForCacheSync(ctx) {
		return fmt.Errorf("watch: informer caches did not sync: %w", ctx.Err())
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	w.log.Info("informer caches synced")
	<-ctx.Done()
	return nil
}

// waitForCacheSync waits until every informer's store holds its initial
// list and every notification of that list has reached the watcher's
// handlers, so that a term that starts afterwards is not handed thousands
// of stale "add" events (and their latencies) from the initial list.
func (w *Watcher) waitForCacheSync(ctx context.Context) bool {
	order := w.srcs.Load().order
	synced := make([]cache.InformerSynced, 0, 2*len(order))
	for _, s := range order {
		synced = append(synced, s.informer.HasSynced, s.registration.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), synced...)
}

// Check is a readiness check: it fails until every informer has synced.
func (w *Watcher) Check(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.synced {
		return errors.New("informer caches have not synced yet")
	}
	return nil
}

// Leading reports whether the watcher is writing (inside Lead).
func (w *Watcher) Leading() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}

// Epoch is the sync epoch of the current or last term as leader; 0 before
// the first.
func (w *Watcher) Epoch() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch
}

// handler turns informer events into queue items. Events are dropped while
// the watcher is not leading: Lead reconciles from the caches anyway.
func (w *Watcher) handler(s *source) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			return
		}
		w.enqueueEvent(Item{Kind: s.kind, Namespace: ns, Name: name})
	}
	if s.kind != layout.KindNamespace {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
			DeleteFunc: enqueue,
		}
	}
	// A Namespace joining or leaving the mesh changes whether every object
	// in it is published.
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			enqueue(obj)
			if ns, ok := obj.(*corev1.Namespace); ok && normalize.InMesh(ns, w.o.MeshName) {
				w.enqueueNamespaceObjects(ns.Name)
			}
		},
		UpdateFunc: func(oldObj, obj any) {
			enqueue(obj)
			o, ok1 := oldObj.(*corev1.Namespace)
			n, ok2 := obj.(*corev1.Namespace)
			if ok1 && ok2 && normalize.InMesh(o, w.o.MeshName) != normalize.InMesh(n, w.o.MeshName) {
				w.enqueueNamespaceObjects(n.Name)
			}
		},
		DeleteFunc: func(obj any) {
			enqueue(obj)
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				w.enqueueNamespaceObjects(key)
			}
		},
	}
}

func (w *Watcher) enqueueEvent(it Item) {
	now := time.Now()
	w.mu.Lock()
	if !w.active {
		w.mu.Unlock()
		return
	}
	if _, ok := w.eventTimes[it]; !ok {
		w.eventTimes[it] = now
	}
	w.mu.Unlock()
	w.queue.Add(it)
}

// enqueueNamespaceObjects queues every cached object of namespace ns.
func (w *Watcher) enqueueNamespaceObjects(ns string) {
	for _, s := range w.srcs.Load().order {
		if !s.namespaced {
			continue
		}
		objs, err := s.informer.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			continue
		}
		for _, obj := range objs {
			if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
				_, name, _ := cache.SplitMetaNamespaceKey(key)
				w.enqueueEvent(Item{Kind: s.kind, Namespace: ns, Name: name})
			}
		}
	}
}

func (w *Watcher) processNext(ctx context.Context) bool {
	it, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(it)
	if err := w.sync(ctx, it); err != nil {
		if errors.Is(err, bus.ErrTooLarge) {
			// Permanent: retrying cannot help, and must not hold up a
			// takeover. The key keeps its last published value (if any),
			// and the object is written again at its next change.
			w.log.WithError(err).WithFields(logrus.Fields{"kind": it.Kind, "namespace": it.Namespace, "name": it.Name}).
				Error("observed object too large to publish; the mesh keeps its last published value")
			w.m.tooLarge.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", it.Kind)))
			w.settle(it)
			w.queue.Forget(it)
			return true
		}
		if ctx.Err() == nil {
			w.log.WithError(err).WithFields(logrus.Fields{"kind": it.Kind, "namespace": it.Namespace, "name": it.Name}).
				Warn("sync of observed object failed, retrying")
		}
		w.queue.AddRateLimited(it)
		return true
	}
	w.queue.Forget(it)
	return true
}

// desired is the message item should have in the bucket, or nil when the
// key should be absent.
func (w *Watcher) desired(it Item) (proto.Message, error) {
	s, ok := w.srcs.Load().byKind[it.Kind]
	if !ok {
		return nil, nil // a stale key of a kind this watcher does not know
	}
	obj, exists, err := s.informer.GetIndexer().GetByKey(it.cacheKey())
	if err != nil {
		return nil, fmt.Errorf("read %s %s from cache: %w", it.Kind, it.cacheKey(), err)
	}
	if !exists {
		return nil, nil
	}
	switch it.Kind {
	case layout.KindNamespace:
		if !normalize.Monitored(obj.(*corev1.Namespace), w.o.MeshName) {
			return nil, nil
		}
	case layout.KindMeshConfig:
		if it.Namespace != w.o.ControlPlaneNamespace {
			return nil, nil
		}
	default:
		if !w.inMesh(it.Namespace) {
			return nil, nil
		}
	}
	m, ok := s.build(obj)
	if !ok {
		return nil, nil
	}
	return m, nil
}

func (w *Watcher) inMesh(ns string) bool {
	obj, exists, err := w.srcs.Load().byKind[layout.KindNamespace].informer.GetIndexer().GetByKey(ns)
	if err != nil || !exists {
		return false
	}
	n, ok := obj.(*corev1.Namespace)
	return ok && normalize.InMesh(n, w.o.MeshName)
}

// sync converges the item's key with the informer cache.
func (w *Watcher) sync(ctx context.Context, it Item) error {
	w.mu.Lock()
	active, epoch := w.active, w.epoch
	t0, timed := w.eventTimes[it]
	delete(w.eventTimes, it)
	w.mu.Unlock()
	if !active {
		return nil
	}
	key := it.Key()
	msg, err := w.desired(it)
	if err != nil {
		return err
	}
	// The epoch and the event's arrival travel in headers, for osm
	// convergence: outside the value, so they never cause a write.
	wctx := bus.WithHeader(ctx, layout.HeaderWatcherEpoch, strconv.FormatUint(epoch, 10))
	if timed {
		wctx = bus.WithHeader(wctx, layout.HeaderEventTime, t0.UTC().Format(time.RFC3339Nano))
	}
	var wrote bool
	op := opPut
	if msg == nil {
		op = opDelete
		wrote, err = w.o.Store.DeleteIfPresent(wctx, key)
	} else {
		_, wrote, err = w.o.Store.PutIfChanged(wctx, key, msg)
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		// The bucket is gone (deleted, or JetStream lost its store): end
		// the term; the next one declares the bucket again and rewrites
		// everything under a new epoch. No responders also comes while
		// a replicated bucket elects a leader (a NATS node died): then
		// the bucket is there, and the write is only retried.
		if gone, gerr := w.o.Store.Gone(ctx); gerr == nil && gone {
			w.loseClaim("the bucket is gone")
		}
		return err
	}
	if errors.Is(err, bus.ErrFenced) {
		superseded, serr := w.o.Store.Superseded(ctx)
		if serr != nil {
			return serr // retried
		}
		if superseded {
			// A newer watcher claimed the bucket: this one is deposed, and
			// the server refused the write. Nothing to retry; the election
			// ends this term.
			w.log.WithFields(logrus.Fields{"kind": it.Kind, "namespace": it.Namespace, "name": it.Name}).Warn("write refused: a newer watcher leads the bucket")
			return nil
		}
		// The claim went with the bucket (deleted and recreated, or
		// JetStream lost its store): end the term, so that Lead starts a
		// new epoch that rewrites everything.
		w.loseClaim("the bucket lost this term's claim (recreated?)")
		return err
	}
	if err != nil {
		if timed {
			w.mu.Lock()
			if _, ok := w.eventTimes[it]; !ok {
				w.eventTimes[it] = t0
			}
			w.mu.Unlock()
		}
		return err
	}
	w.m.recordSync(ctx, it.Kind, op, wrote, t0, timed)
	if wrote {
		w.log.WithFields(logrus.Fields{"kind": it.Kind, "namespace": it.Namespace, "name": it.Name, "op": op}).Debug("wrote observed object")
	}
	w.mu.Lock()
	if msg == nil {
		delete(w.present, key)
	} else {
		w.present[key] = it.Kind
	}
	w.mu.Unlock()
	w.settle(it)
	return nil
}

// loseClaim ends the current term (see Lead) once.
func (w *Watcher) loseClaim(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fenceLost != nil {
		w.log.WithField("reason", why).Warn("ending the term: a new epoch will rewrite the bucket")
		close(w.fenceLost)
		w.fenceLost = nil
	}
}

// settle marks it done for the takeover in progress, if any.
func (w *Watcher) settle(it Item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending != nil {
		delete(w.pending, it)
		if len(w.pending) == 0 {
			close(w.pendingOK)
			w.pending = nil
		}
	}
}

// counts tallies the keys in the bucket by kind name, for the sync marker
// and the objects metric.
func (w *Watcher) counts() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]uint64{}
	for _, kind := range w.present {
		out[layout.KindName(kind)]++
	}
	return out
}
