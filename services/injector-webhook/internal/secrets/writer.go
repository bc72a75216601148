// Package secrets issues and writes the injector's bootstrap Secrets off the
// admission path, once their pod exists.
//
// Admission hands Store a Secret that holds the rendered bootstrap but no
// certificate, and returns at once: the Writer holds it in memory until
// Claim names its pod (the reconciler's pod informer has seen the pod
// stored). Only then does a worker have the Certifier issue the pod's
// certificate (a key here, a signature from the cert-authority) and create
// the Secret, owned by the pod so that Kubernetes deletes it with the pod.
// A held Secret that no pod claims within OwnerWait was made for a pod that
// never appeared (rejected after admission, or a forged AdmissionReview sent
// straight to the webhook's listener): it is dropped, and it cost no key,
// no signature and no apiserver write. Transient errors are retried with
// jittered exponential backoff.
//
// The patch the apiserver receives names the Secret, so the pod is stored
// before the Secret exists: the kubelet mounts a Secret volume by retrying
// until it appears, and the sidecar cannot start before its volume is
// mounted, so a few milliseconds of lag cost nothing.
//
// Nothing an admitted pod needs is lost for good; what the Writer cannot do
// the reconciler (package reconcile) does, after its grace period, for the
// pods that exist:
//   - when more Secrets wait than QueueSize, Store drops the new one
//     (counted) rather than write it before its pod exists;
//   - a write that still fails after its attempts, or that was held or
//     queued when the process died, leaves an injected pod without its
//     Secret;
//   - on shutdown, Start stops taking Secrets, drops those still waiting
//     for their pod, and flushes the claimed ones within FlushTimeout.
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

// Certifier issues the certificate of a bootstrap Secret, for service
// account sa of the Secret's namespace, and puts it into the Secret
// (webhook.Certifier).
type Certifier interface {
	Certify(ctx context.Context, s *corev1.Secret, sa string) error
}

// Reasons a Secret is dropped unwritten, for ObserveDrop.
const (
	// DropUnclaimed: no pod claimed it within OwnerWait.
	DropUnclaimed = "unclaimed"
	// DropFull: QueueSize Secrets were already waiting.
	DropFull = "full"
	// DropStopped: the Writer was stopping.
	DropStopped = "stopped"
)

// Options configure a Writer. Zero values take the defaults.
type Options struct {
	// Workers is the number of concurrent writers; default 4.
	Workers int
	// QueueSize bounds the Secrets waiting to be written; default 1024.
	QueueSize int
	// Certifier issues each Secret's certificate once its pod has claimed
	// it; required.
	Certifier Certifier
	// Attempts is how often one Secret is tried (certificate and create)
	// before it is given up to the reconciler; default 6.
	Attempts int
	// BaseBackoff and MaxBackoff bound the jittered exponential backoff
	// between attempts; defaults 50 ms and 2 s.
	BaseBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds one create call; default 10 s.
	WriteTimeout time.Duration
	// FlushTimeout bounds the flush of the queue at shutdown; default 10 s.
	FlushTimeout time.Duration
	// OwnerWait is how long a stored Secret waits for Claim before it is
	// dropped unwritten; default 30 s.
	OwnerWait time.Duration
	// ObserveWrite, when set, is told about every Secret written or given
	// up: the time from Store to the end of the last attempt (waiting for
	// Claim and the certificate included), the number of attempts and the
	// final error.
	ObserveWrite func(d time.Duration, attempts int, err error)
	// ObserveDrop, when set, is told about every Secret dropped unwritten,
	// with the reason: DropUnclaimed, DropFull or DropStopped.
	ObserveDrop func(reason string)
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
	if o.OwnerWait <= 0 {
		o.OwnerWait = 30 * time.Second
	}
}

type item struct {
	secret *corev1.Secret
	sa     string // the pod's service account, the certificate's identity
	queued time.Time
	// certified is set once the certificate is in secret.
	certified bool
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

// Store holds s, a bootstrap Secret without a certificate, until its pod
// claims it, for at most OwnerWait, and returns nil at once; sa is the
// pod's service account. It never issues nor writes anything itself. When
// QueueSize Secrets already wait, or the Writer has stopped, s is dropped
// (ObserveDrop) and the reconciler issues the pod's Secret if the pod
// exists. s must not be modified afterwards.
func (w *Writer) Store(_ context.Context, s *corev1.Secret, sa string) error {
	w.mu.Lock()
	reason := ""
	switch {
	case w.stopped:
		reason = DropStopped
	case len(w.held) >= w.o.QueueSize:
		reason = DropFull
	default:
		w.held[s.Namespace+"/"+s.Name] = item{secret: s, sa: sa, queued: time.Now()}
	}
	w.mu.Unlock()
	if reason != "" {
		w.drop(reason, 1)
	}
	return nil
}

func (w *Writer) drop(reason string, n int) {
	if w.o.ObserveDrop != nil {
		for range n {
			w.o.ObserveDrop(reason)
		}
	}
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
	w.drop(DropUnclaimed, dropped)
}

// Start runs the workers until ctx ends, then stops taking new Secrets,
// drops those still waiting for their pod, and flushes the claimed ones
// within FlushTimeout. It returns an error when claimed Secrets were left
// unwritten by the flush.
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
		// Their pods, if they exist, get a Secret from the reconciler: a
		// Secret is never signed before its pod exists.
		unclaimed := len(w.held)
		clear(w.held)
		w.mu.Unlock()
		w.drop(DropStopped, unclaimed)
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

// write issues the certificate of one claimed Secret and creates it,
// trying up to Attempts times, and returns the last error.
func (w *Writer) write(ctx context.Context, it item) error {
	var err error
	attempt := 0
	for attempt < w.o.Attempts {
		attempt++
		var again bool
		if again, err = w.attempt(ctx, &it); !again {
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
			w.observe(it.queued, attempt, err)
			return err
		case <-t.C:
		}
	}
	w.observe(it.queued, attempt, err)
	return err
}

// attempt issues the certificate, unless an earlier attempt did, and
// creates the Secret; it reports whether a failure may be retried.
func (w *Writer) attempt(ctx context.Context, it *item) (again bool, err error) {
	if !it.certified {
		// The CA may be restarting: retried like a create.
		if err := w.o.Certifier.Certify(ctx, it.secret, it.sa); err != nil {
			return ctx.Err() == nil, err
		}
		it.certified = true
	}
	err = w.create(ctx, it.secret)
	return err != nil && retryable(err), err
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

func (w *Writer) observe(start time.Time, attempts int, err error) {
	if w.o.ObserveWrite != nil {
		w.o.ObserveWrite(time.Since(start), attempts, err)
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
