// Package secrets writes the injector's bootstrap Secrets off the admission
// path.
//
// An apiserver/etcd round trip per pod would be most of the webhook's
// latency, so admission does not wait for it: the Writer takes the Secret
// into a bounded queue and returns at once, and a small pool of workers
// creates the Secrets, retrying transient errors with jittered exponential
// backoff. The patch the apiserver receives names the Secret, so the pod can
// be stored before the Secret exists: the kubelet mounts a Secret volume by
// retrying until the Secret appears, and the sidecar cannot start before its
// volume is mounted, so a few milliseconds of lag cost nothing.
//
// With OwnerWait, Store holds the Secret in memory until Claim names its pod
// (the reconciler's pod informer has seen the pod stored); the Secret is
// then created with the pod as its owner, so that Kubernetes deletes it with
// the pod. A held Secret that no pod claims within OwnerWait belongs to a
// pod the apiserver rejected after admission, and is dropped unwritten.
//
// Nothing an admitted pod needs is lost:
//   - when the queue is full, Store writes synchronously, within the
//     admission call, and the caller sees the error;
//   - a write that still fails after its attempts, or that was queued when
//     the process died, leaves an injected pod without its Secret; the
//     reconciler (package reconcile) finds such pods and issues them a fresh
//     Secret;
//   - on shutdown, Start stops taking new items (later ones are written
//     synchronously) and flushes the queue within FlushTimeout.
//
// The Writer reports through callbacks, not logs or a metrics registry.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/backoff"
)

// Creator creates a Secret in the apiserver.
type Creator interface {
	Create(ctx context.Context, s *corev1.Secret) error
}

// Options configure a Writer. Zero values take the defaults.
type Options struct {
	// Workers is the number of concurrent writers; default 4.
	Workers int
	// QueueSize bounds the Secrets waiting to be written; default 1024.
	QueueSize int
	// Attempts is how often one Secret is tried before it is given up to
	// the reconciler; default 6.
	Attempts int
	// BaseBackoff and MaxBackoff bound the jittered exponential backoff
	// between attempts; defaults 50 ms and 2 s.
	BaseBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds one create call; default 10 s.
	WriteTimeout time.Duration
	// FlushTimeout bounds the flush of the queue at shutdown; default 10 s.
	FlushTimeout time.Duration
	// OwnerWait, when positive, is how long a stored Secret waits for Claim
	// before it is dropped unwritten; see the package doc. 0 writes every
	// Secret at once, without an owner.
	OwnerWait time.Duration
	// ObserveWrite, when set, is told about every Secret written or given
	// up: the time from Store to the end of the last attempt (waiting for
	// Claim included), the number of attempts, whether it was written
	// synchronously, and the final error.
	ObserveWrite func(d time.Duration, attempts int, sync bool, err error)
	// ObserveDrop, when set, is told about every held Secret dropped
	// because no pod claimed it within OwnerWait.
	ObserveDrop func()
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.Attempts <= 0 {
		o.Attempts = 6
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff < o.BaseBackoff {
		o.MaxBackoff = max(2*time.Second, o.BaseBackoff)
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 10 * time.Second
	}
}

type item struct {
	secret *corev1.Secret
	queued time.Time
}

// Writer creates Secrets asynchronously; see the package doc.
type Writer struct {
	c     Creator
	o     Options
	queue chan item

	mu      sync.RWMutex // held for writing to set stopped and to change held
	stopped bool
	// held are the Secrets waiting for Claim, by namespace/name.
	held map[string]item
	// pending counts the writes started outside the workers because the
	// queue was full; a stopping Start waits for them.
	pending sync.WaitGroup
	wctx    context.Context // Start's write context
	lost    atomic.Int64    // Secrets not written at shutdown
}

// New returns a Writer; call Start to run its workers.
func New(c Creator, o Options) *Writer {
	o.defaults()
	return &Writer{c: c, o: o, queue: make(chan item, o.QueueSize), held: map[string]item{}}
}

// Len is the number of Secrets waiting to be written: queued for a worker,
// or held for their pod.
func (w *Writer) Len() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.queue) + len(w.held)
}

// Store holds s for its pod (with OwnerWait) or hands it to the workers,
// and returns nil at once. When both are full or the Writer has stopped,
// Store creates s synchronously (one attempt, bounded by ctx) and returns
// that error. An existing Secret of the same name counts
// as written. s must not be modified afterwards.
func (w *Writer) Store(ctx context.Context, s *corev1.Secret) error {
	now := time.Now()
	it := item{secret: s, queued: now}
	if w.o.OwnerWait > 0 {
		w.mu.Lock()
		if !w.stopped && len(w.held) < w.o.QueueSize {
			w.held[s.Namespace+"/"+s.Name] = it
			w.mu.Unlock()
			return nil
		}
		w.mu.Unlock()
	}
	w.mu.RLock()
	if !w.stopped {
		select {
		case w.queue <- it:
			w.mu.RUnlock()
			return nil
		default:
		}
	}
	w.mu.RUnlock()
	err := w.create(ctx, s)
	w.observe(now, 1, true, err)
	if err != nil {
		return fmt.Errorf("create bootstrap secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// Claim hands the held Secret namespace/name, if any, to the workers with
// owners as its ownerReferences, and reports whether one was held. It never
// blocks.
func (w *Writer) Claim(namespace, name string, owners []metav1.OwnerReference) bool {
	key := namespace + "/" + name
	w.mu.Lock()
	defer w.mu.Unlock()
	it, ok := w.held[key]
	if !ok {
		return false
	}
	delete(w.held, key)
	it.secret.OwnerReferences = owners
	w.enqueueLocked(it)
	return true
}

// enqueueLocked queues it for the workers or, when the queue is full,
// writes it on a goroutine of its own, which a stopping Start waits for.
// w.mu is held for writing. Start sets stopped under w.mu before it lets
// the workers drain the queue and exit, so whatever is enqueued here is in
// the queue before that last drain.
func (w *Writer) enqueueLocked(it item) {
	select {
	case w.queue <- it:
	default:
		w.pending.Add(1)
		stopped := w.stopped
		go func() {
			defer w.pending.Done()
			if w.write(w.writeCtx(), it) != nil && stopped {
				w.lost.Add(1)
			}
		}()
	}
}

func (w *Writer) writeCtx() context.Context {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.wctx == nil {
		return context.Background()
	}
	return w.wctx
}

// expire drops the held Secrets that waited OwnerWait.
func (w *Writer) expire(now time.Time) {
	w.mu.Lock()
	var dropped int
	for k, it := range w.held {
		if now.Sub(it.queued) >= w.o.OwnerWait {
			delete(w.held, k)
			dropped++
		}
	}
	w.mu.Unlock()
	if w.o.ObserveDrop != nil {
		for range dropped {
			w.o.ObserveDrop()
		}
	}
}

// Start runs the workers until ctx ends, then stops taking new Secrets and
// flushes those queued or held (these without an owner) within
// FlushTimeout. It returns an error when Secrets were left unwritten by the
// flush.
func (w *Writer) Start(ctx context.Context) error {
	// Writes outlive ctx: a Secret taken from the queue is written even
	// when ctx ends meanwhile, until the flush deadline cancels wctx.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// The stopper below ends with wctx; Start returns after it.
	var stopper sync.WaitGroup
	defer func() {
		cancel()
		stopper.Wait()
	}()
	w.mu.Lock()
	w.wctx = wctx
	w.mu.Unlock()
	stopping := make(chan struct{})
	stopper.Go(func() {
		select {
		case <-ctx.Done():
		case <-wctx.Done():
			return
		}
		w.mu.Lock()
		w.stopped = true // nothing enters the queue or held from now on
		for k, it := range w.held {
			delete(w.held, k)
			w.enqueueLocked(it) // without an owner
		}
		w.mu.Unlock()
		close(stopping)
		t := time.NewTimer(w.o.FlushTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-wctx.Done():
		}
	})
	var wg sync.WaitGroup
	if w.o.OwnerWait > 0 {
		wg.Go(func() {
			t := time.NewTicker(max(w.o.OwnerWait/10, 10*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case now := <-t.C:
					w.expire(now)
				case <-stopping:
					return
				}
			}
		})
	}
	for range w.o.Workers {
		wg.Go(func() {
			for {
				select {
				case it := <-w.queue:
					w.write(wctx, it)
				case <-stopping:
					for {
						select {
						case it := <-w.queue:
							if w.write(wctx, it) != nil {
								w.lost.Add(1)
							}
						default:
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	w.pending.Wait()
	if n := w.lost.Load(); n > 0 {
		return fmt.Errorf("%d bootstrap secrets left unwritten at shutdown; the reconciler recreates them", n)
	}
	return nil
}

// write tries one queued Secret up to Attempts times and returns the last
// error.
func (w *Writer) write(ctx context.Context, it item) error {
	var err error
	attempt := 0
	for attempt < w.o.Attempts {
		attempt++
		if err = w.create(ctx, it.secret); err == nil || !retryable(err) {
			break
		}
		if attempt == w.o.Attempts {
			break
		}
		t := time.NewTimer(w.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			err = errors.Join(err, ctx.Err())
			w.observe(it.queued, attempt, false, err)
			return err
		case <-t.C:
		}
	}
	w.observe(it.queued, attempt, false, err)
	return err
}

func (w *Writer) create(ctx context.Context, s *corev1.Secret) error {
	cctx, cancel := context.WithTimeout(ctx, w.o.WriteTimeout)
	defer cancel()
	err := w.c.Create(cctx, s)
	if apierrors.IsAlreadyExists(err) {
		// The reconciler (or another replica) got there first with a
		// Secret for the same proxy.
		return nil
	}
	return err
}

// backoff is the wait after attempt (1 for the first), between
// BaseBackoff and MaxBackoff.
func (w *Writer) backoff(attempt int) time.Duration {
	return backoff.Wait(w.o.BaseBackoff, w.o.MaxBackoff, attempt)
}

func (w *Writer) observe(start time.Time, attempts int, sync bool, err error) {
	if w.o.ObserveWrite != nil {
		w.o.ObserveWrite(time.Since(start), attempts, sync, err)
	}
}

// retryable reports whether a create may succeed if tried again: not when
// the request itself is wrong or forbidden, or the namespace is gone.
func retryable(err error) bool {
	switch {
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsForbidden(err),
		apierrors.IsUnauthorized(err), apierrors.IsNotFound(err), apierrors.IsMethodNotSupported(err):
		return false
	}
	return true
}
