package secrets

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// creator is a hand-written fake of Creator: it fails each Secret with the
// errors queued for its name, blocks while gate is held, and records what
// it created.
type creator struct {
	mu      sync.Mutex
	fail    map[string][]error
	calls   map[string]int
	created []string
	owners  map[string][]metav1.OwnerReference
	gate    chan struct{} // when non-nil, Create waits for it to close
}

func newCreator() *creator {
	return &creator{fail: map[string][]error{}, calls: map[string]int{}, owners: map[string][]metav1.OwnerReference{}}
}

func (c *creator) Create(ctx context.Context, s *corev1.Secret) error {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[s.Name]++
	if errs := c.fail[s.Name]; len(errs) > 0 {
		c.fail[s.Name] = errs[1:]
		return errs[0]
	}
	c.created = append(c.created, s.Name)
	c.owners[s.Name] = s.OwnerReferences
	return nil
}

func (c *creator) snapshot() ([]string, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls := map[string]int{}
	for k, v := range c.calls {
		calls[k] = v
	}
	return append([]string(nil), c.created...), calls
}

func secret(name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: name}}
}

type result struct {
	attempts int
	sync     bool
	err      error
}

// observer records ObserveWrite calls and signals each on done.
type observer struct {
	mu   sync.Mutex
	got  []result
	done chan struct{}
}

func newObserver() *observer { return &observer{done: make(chan struct{}, 100)} }

func (o *observer) observe(_ time.Duration, attempts int, sync bool, err error) {
	o.mu.Lock()
	o.got = append(o.got, result{attempts, sync, err})
	o.mu.Unlock()
	o.done <- struct{}{}
}

func (o *observer) wait(t *testing.T, n int) []result {
	t.Helper()
	for range n {
		select {
		case <-o.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %d writes", n)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]result(nil), o.got...)
}

func run(t *testing.T, w *Writer) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Start(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestStoreReturnsBeforeTheWrite(t *testing.T) {
	c, obs := newCreator(), newObserver()
	c.gate = make(chan struct{})
	w := New(c, Options{Workers: 1, QueueSize: 4, ObserveWrite: obs.observe})
	run(t, w)
	if err := w.Store(t.Context(), secret("a")); err != nil {
		t.Fatal(err)
	}
	// The creator is blocked, so Store returned before the write.
	if created, _ := c.snapshot(); len(created) != 0 {
		t.Fatalf("created %v before the gate opened", created)
	}
	close(c.gate)
	got := obs.wait(t, 1)
	if got[0] != (result{1, false, nil}) {
		t.Fatalf("write: %+v", got[0])
	}
	if created, _ := c.snapshot(); len(created) != 1 || created[0] != "a" {
		t.Fatalf("created %v", created)
	}
}

func TestFullQueueWritesSynchronously(t *testing.T) {
	c, obs := newCreator(), newObserver()
	c.gate = make(chan struct{})
	// No workers run: the queue of one fills at once.
	w := New(c, Options{Workers: 1, QueueSize: 1, ObserveWrite: obs.observe})
	if err := w.Store(t.Context(), secret("queued")); err != nil {
		t.Fatal(err)
	}
	close(c.gate)
	if err := w.Store(t.Context(), secret("sync")); err != nil {
		t.Fatal(err)
	}
	if got := obs.wait(t, 1); got[0] != (result{1, true, nil}) {
		t.Fatalf("fallback write: %+v", got[0])
	}
	if created, _ := c.snapshot(); len(created) != 1 || created[0] != "sync" {
		t.Fatalf("created %v, want the second Secret written synchronously", created)
	}
	if w.Len() != 1 {
		t.Fatalf("queue length %d, want 1", w.Len())
	}
	// The synchronous path returns its error: nothing is dropped silently.
	c.fail["sync-bad"] = []error{errors.New("etcd down")}
	if err := w.Store(t.Context(), secret("sync-bad")); err == nil {
		t.Fatal("a failed synchronous write returned nil")
	}
	// Starting and stopping flushes the queued Secret.
	if err := run(t, w)(); err != nil {
		t.Fatal(err)
	}
	if created, _ := c.snapshot(); len(created) != 2 {
		t.Fatalf("created %v after the flush", created)
	}
}

func TestRetriesTransientErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	cases := []struct {
		name     string
		errs     []error
		attempts int // the writer's Options.Attempts is 3
		written  bool
		wantErr  bool
	}{
		{"transient then ok", []error{apierrors.NewServerTimeout(gr, "create", 1), apierrors.NewTooManyRequests("slow down", 1)}, 3, true, false},
		{"already exists is written", []error{apierrors.NewAlreadyExists(gr, "x")}, 1, false, false},
		{"forbidden is final", []error{apierrors.NewForbidden(gr, "x", errors.New("namespace terminating"))}, 1, false, true},
		{"gives up after the attempts", []error{errors.New("1"), errors.New("connection reset"), errors.New("3"), errors.New("4")}, 3, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, obs := newCreator(), newObserver()
			c.fail["s"] = tc.errs
			w := New(c, Options{Workers: 2, Attempts: 3,
				BaseBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, ObserveWrite: obs.observe})
			run(t, w)
			if err := w.Store(t.Context(), secret("s")); err != nil {
				t.Fatal(err)
			}
			got := obs.wait(t, 1)[0]
			if got.attempts != tc.attempts || got.sync || (got.err != nil) != tc.wantErr {
				t.Fatalf("got %+v, want %d attempts, error %v", got, tc.attempts, tc.wantErr)
			}
			created, calls := c.snapshot()
			if (len(created) == 1) != tc.written || calls["s"] != tc.attempts {
				t.Fatalf("created %v after %d calls", created, calls["s"])
			}
		})
	}
}

func TestBackoffIsJitteredAndBounded(t *testing.T) {
	w := New(newCreator(), Options{BaseBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	seen := map[time.Duration]bool{}
	for attempt := 1; attempt <= 40; attempt++ {
		d := w.backoff(attempt)
		ceil := min(80*time.Millisecond, 10*time.Millisecond<<min(attempt-1, 20))
		if d < 5*time.Millisecond || d > ceil {
			t.Fatalf("attempt %d: backoff %s outside [5ms, %s]", attempt, d, ceil)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct backoffs in 40: not jittered", len(seen))
	}
}

func TestShutdownFlushesAndThenWritesSynchronously(t *testing.T) {
	c, obs := newCreator(), newObserver()
	c.gate = make(chan struct{})
	w := New(c, Options{Workers: 2, QueueSize: 16, ObserveWrite: obs.observe})
	stop := run(t, w)
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if err := w.Store(t.Context(), secret(n)); err != nil {
			t.Fatal(err)
		}
	}
	close(c.gate)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if created, _ := c.snapshot(); len(created) != 5 {
		t.Fatalf("created %v, want all five flushed", created)
	}
	// After the stop, Store writes synchronously rather than queueing into
	// a queue nobody drains.
	if err := w.Store(t.Context(), secret("late")); err != nil {
		t.Fatal(err)
	}
	got := obs.wait(t, 6)
	if last := got[len(got)-1]; !last.sync {
		t.Fatalf("late write %+v, want synchronous", last)
	}
	if w.Len() != 0 {
		t.Fatalf("%d left in the queue", w.Len())
	}
}

func ownerOf(name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: name, UID: "uid-" + types.UID(name)}}
}

func TestHeldSecretIsWrittenOwnedOnceClaimed(t *testing.T) {
	c, obs := newCreator(), newObserver()
	w := New(c, Options{Workers: 1, OwnerWait: time.Minute, ObserveWrite: obs.observe})
	run(t, w)
	if err := w.Store(t.Context(), secret("a")); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 1 {
		t.Fatalf("Len %d, want the held Secret counted", w.Len())
	}
	// Nothing is written before the pod appears.
	time.Sleep(50 * time.Millisecond)
	if created, _ := c.snapshot(); len(created) != 0 {
		t.Fatalf("created %v before the claim", created)
	}
	if w.Claim("other", "a", ownerOf("pod-a")) {
		t.Fatal("a claim in another namespace took the Secret")
	}
	if !w.Claim("bookstore", "a", ownerOf("pod-a")) {
		t.Fatal("the held Secret was not claimed")
	}
	if got := obs.wait(t, 1); got[0] != (result{1, false, nil}) {
		t.Fatalf("write: %+v", got[0])
	}
	c.mu.Lock()
	owners := c.owners["a"]
	c.mu.Unlock()
	if len(owners) != 1 || owners[0].UID != "uid-pod-a" {
		t.Fatalf("created with owners %v, want pod-a", owners)
	}
	// A second claim (the pod's update events) finds nothing.
	if w.Claim("bookstore", "a", ownerOf("pod-a")) {
		t.Fatal("claimed twice")
	}
}

func TestUnclaimedSecretIsDroppedUnwritten(t *testing.T) {
	c := newCreator()
	dropped := make(chan struct{}, 1)
	w := New(c, Options{Workers: 1, OwnerWait: 100 * time.Millisecond, ObserveDrop: func() { dropped <- struct{}{} }})
	stop := run(t, w)
	start := time.Now()
	if err := w.Store(t.Context(), secret("rejected")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dropped:
	case <-time.After(10 * time.Second):
		t.Fatal("the unclaimed Secret was not dropped")
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("dropped after %s, before OwnerWait", d)
	}
	if w.Claim("bookstore", "rejected", ownerOf("late")) {
		t.Fatal("a dropped Secret was claimed")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if created, calls := c.snapshot(); len(created) != 0 || len(calls) != 0 {
		t.Fatalf("created %v (calls %v): a dropped Secret was written", created, calls)
	}
}

func TestShutdownWritesHeldSecretsWithoutOwner(t *testing.T) {
	c := newCreator()
	// A queue of one and a single blocked worker: the held Secrets do not
	// all fit in the queue at shutdown.
	c.gate = make(chan struct{})
	w := New(c, Options{Workers: 1, QueueSize: 8, OwnerWait: time.Hour})
	stop := run(t, w)
	for _, n := range []string{"a", "b", "c"} {
		if err := w.Store(t.Context(), secret(n)); err != nil {
			t.Fatal(err)
		}
	}
	close(c.gate)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	created, _ := c.snapshot()
	if len(created) != 3 {
		t.Fatalf("created %v, want the three held Secrets flushed", created)
	}
	for _, n := range created {
		if len(c.owners[n]) != 0 {
			t.Fatalf("%s flushed with owners %v", n, c.owners[n])
		}
	}
}

func TestFullHoldingAreaWritesAtOnce(t *testing.T) {
	c, obs := newCreator(), newObserver()
	w := New(c, Options{Workers: 1, QueueSize: 1, OwnerWait: time.Hour, ObserveWrite: obs.observe})
	run(t, w)
	for _, n := range []string{"held", "at-once"} {
		if err := w.Store(t.Context(), secret(n)); err != nil {
			t.Fatal(err)
		}
	}
	obs.wait(t, 1)
	if created, _ := c.snapshot(); len(created) != 1 || created[0] != "at-once" {
		t.Fatalf("created %v, want only the Secret that found the holding area full", created)
	}
}

func TestClaimWithAFullQueueDoesNotBlock(t *testing.T) {
	c, obs := newCreator(), newObserver()
	c.gate = make(chan struct{})
	// Not started: nothing drains the queue. a and b are held; c finds the
	// holding area full and takes one of the queue's two places.
	w := New(c, Options{Workers: 1, QueueSize: 2, OwnerWait: time.Hour, ObserveWrite: obs.observe})
	for _, n := range []string{"a", "b", "c"} {
		if err := w.Store(t.Context(), secret(n)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		w.Claim("bookstore", "a", ownerOf("a")) // fills the queue
		w.Claim("bookstore", "b", ownerOf("b")) // writes on its own goroutine
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Claim blocked on a full queue")
	}
	close(c.gate)
	if got := obs.wait(t, 1); got[0].err != nil {
		t.Fatalf("overflow write: %+v", got[0])
	}
	if err := run(t, w)(); err != nil {
		t.Fatal(err)
	}
	if created, _ := c.snapshot(); len(created) != 3 {
		t.Fatalf("created %v", created)
	}
}
