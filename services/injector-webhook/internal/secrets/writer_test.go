package secrets

import (
	"context"
	"errors"
	"fmt"
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
	data    map[string]map[string][]byte
	gate    chan struct{} // when non-nil, Create waits for it to close
}

func newCreator() *creator {
	return &creator{fail: map[string][]error{}, calls: map[string]int{}, owners: map[string][]metav1.OwnerReference{}, data: map[string]map[string][]byte{}}
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
	c.data[s.Name] = s.Data
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

// certifier is a hand-written fake of Certifier: it counts its calls,
// fails with the errors queued, and puts a fake certificate in.
type certifier struct {
	mu    sync.Mutex
	calls []string // namespace/name/sa
	fail  []error
}

func (c *certifier) Certify(_ context.Context, s *corev1.Secret, sa string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s.Namespace+"/"+s.Name+"/"+sa)
	if len(c.fail) > 0 {
		err := c.fail[0]
		c.fail = c.fail[1:]
		return err
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data["tls.crt"] = []byte("cert for " + sa)
	return nil
}

func (c *certifier) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

type result struct {
	attempts int
	err      error
}

// observer records ObserveWrite calls and signals each on done.
type observer struct {
	mu   sync.Mutex
	got  []result
	done chan struct{}
}

func newObserver() *observer { return &observer{done: make(chan struct{}, 100)} }

func (o *observer) observe(_ time.Duration, attempts int, err error) {
	o.mu.Lock()
	o.got = append(o.got, result{attempts, err})
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

// drops counts ObserveDrop calls by reason.
type drops struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *drops) observe(reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	d.n[reason]++
}

func (d *drops) count(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[reason]
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

func ownerOf(name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: name, UID: "uid-" + types.UID(name)}}
}

// TestUnclaimedSecretsCostNothing is the amplifier of issue 15 (item 7):
// Secrets stored for pods that never appear (forged AdmissionReviews) get
// no certificate and no write, whether they wait out OwnerWait or find the
// holding area full.
func TestUnclaimedSecretsCostNothing(t *testing.T) {
	c, cert, dr := newCreator(), &certifier{}, &drops{}
	const forged, room = 1000, 600
	w := New(c, Options{Workers: 2, QueueSize: room, OwnerWait: 200 * time.Millisecond, Certifier: cert, ObserveDrop: dr.observe})
	stop := run(t, w)
	for i := range forged {
		if err := w.Store(t.Context(), secret(fmt.Sprintf("forged-%d", i)), "default"); err != nil {
			t.Fatal(err)
		}
	}
	if n := dr.count(DropFull); n != forged-room {
		t.Fatalf("%d dropped as full, want %d", n, forged-room)
	}
	deadline := time.Now().Add(10 * time.Second)
	for dr.count(DropUnclaimed) < room {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d held Secrets dropped after OwnerWait", dr.count(DropUnclaimed), room)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if created, calls := c.snapshot(); len(created) != 0 || len(calls) != 0 || cert.count() != 0 {
		t.Fatalf("%d certificates issued and %d creates for pods that never appeared", cert.count(), len(calls))
	}
	if w.Len() != 0 {
		t.Fatalf("%d Secrets still waiting", w.Len())
	}
}

func TestClaimedSecretIsCertifiedAndWrittenOwned(t *testing.T) {
	c, cert, obs := newCreator(), &certifier{}, newObserver()
	c.gate = make(chan struct{})
	w := New(c, Options{Workers: 1, OwnerWait: time.Minute, Certifier: cert, ObserveWrite: obs.observe})
	run(t, w)
	if err := w.Store(t.Context(), secret("a"), "bookstore"); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 1 {
		t.Fatalf("Len %d, want the held Secret counted", w.Len())
	}
	// Nothing is issued nor written before the pod appears.
	time.Sleep(50 * time.Millisecond)
	if created, _ := c.snapshot(); len(created) != 0 || cert.count() != 0 {
		t.Fatalf("created %v, %d certificates, before the claim", created, cert.count())
	}
	if w.Claim("other", "a", ownerOf("pod-a")) {
		t.Fatal("a claim in another namespace took the Secret")
	}
	if !w.Claim("bookstore", "a", ownerOf("pod-a")) {
		t.Fatal("the held Secret was not claimed")
	}
	// Claim returned before the write: the creator is still blocked.
	close(c.gate)
	if got := obs.wait(t, 1); got[0] != (result{1, nil}) {
		t.Fatalf("write: %+v", got[0])
	}
	if cert.calls[0] != "bookstore/a/bookstore" {
		t.Fatalf("certified %v, want the Secret for service account bookstore", cert.calls)
	}
	c.mu.Lock()
	owners, data := c.owners["a"], c.data["a"]
	c.mu.Unlock()
	if len(owners) != 1 || owners[0].UID != "uid-pod-a" {
		t.Fatalf("created with owners %v, want pod-a", owners)
	}
	if string(data["tls.crt"]) != "cert for bookstore" {
		t.Fatalf("created without its certificate: %q", data["tls.crt"])
	}
	// A second claim (the pod's update events) finds nothing.
	if w.Claim("bookstore", "a", ownerOf("pod-a")) {
		t.Fatal("claimed twice")
	}
}

func TestRetriesTransientErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	cases := []struct {
		name      string
		errs      []error
		certErrs  []error
		attempts  int // the writer's Options.Attempts is 3
		certCalls int
		written   bool
		wantErr   bool
	}{
		{"transient then ok", []error{apierrors.NewServerTimeout(gr, "create", 1), apierrors.NewTooManyRequests("slow down", 1)}, nil, 3, 1, true, false},
		{"already exists is written", []error{apierrors.NewAlreadyExists(gr, "x")}, nil, 1, 1, false, false},
		{"forbidden is final", []error{apierrors.NewForbidden(gr, "x", errors.New("namespace terminating"))}, nil, 1, 1, false, true},
		{"gives up after the attempts", []error{errors.New("1"), errors.New("connection reset"), errors.New("3"), errors.New("4")}, nil, 3, 1, false, true},
		{"the CA fails, then signs", nil, []error{errors.New("ca unavailable")}, 2, 2, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, obs := newCreator(), newObserver()
			cert := &certifier{fail: tc.certErrs}
			c.fail["s"] = tc.errs
			w := New(c, Options{Workers: 2, Attempts: 3, Certifier: cert,
				BaseBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, ObserveWrite: obs.observe})
			run(t, w)
			if err := w.Store(t.Context(), secret("s"), "default"); err != nil {
				t.Fatal(err)
			}
			w.Claim("bookstore", "s", ownerOf("s"))
			got := obs.wait(t, 1)[0]
			if got.attempts != tc.attempts || (got.err != nil) != tc.wantErr {
				t.Fatalf("got %+v, want %d attempts, error %v", got, tc.attempts, tc.wantErr)
			}
			created, calls := c.snapshot()
			if (len(created) == 1) != tc.written || calls["s"] != tc.attempts-len(tc.certErrs) {
				t.Fatalf("created %v after %d calls", created, calls["s"])
			}
			// One certificate per Secret, however often the create is tried.
			if cert.count() != tc.certCalls {
				t.Fatalf("%d certificates issued, want %d", cert.count(), tc.certCalls)
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

func TestShutdownFlushesClaimedAndDropsUnclaimed(t *testing.T) {
	c, cert, dr := newCreator(), &certifier{}, &drops{}
	c.gate = make(chan struct{})
	w := New(c, Options{Workers: 2, QueueSize: 16, OwnerWait: time.Hour, Certifier: cert, ObserveDrop: dr.observe})
	stop := run(t, w)
	for _, n := range []string{"a", "b", "c", "d", "e", "unclaimed"} {
		if err := w.Store(t.Context(), secret(n), "default"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		w.Claim("bookstore", n, ownerOf(n))
	}
	close(c.gate)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if created, _ := c.snapshot(); len(created) != 5 || cert.count() != 5 {
		t.Fatalf("created %v with %d certificates, want the five claimed flushed", created, cert.count())
	}
	if dr.count(DropStopped) != 1 {
		t.Fatalf("dropped %v, want the unclaimed Secret dropped at shutdown", dr.n)
	}
	// After the stop, Store takes nothing.
	if err := w.Store(t.Context(), secret("late"), "default"); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 0 || dr.count(DropStopped) != 2 || cert.count() != 5 {
		t.Fatalf("late Store: Len %d, dropped %v, %d certificates", w.Len(), dr.n, cert.count())
	}
}

func TestClaimWithAFullQueueDoesNotBlock(t *testing.T) {
	c, obs := newCreator(), newObserver()
	c.gate = make(chan struct{})
	// Not started: nothing drains the queue of one.
	w := New(c, Options{Workers: 1, QueueSize: 1, OwnerWait: time.Hour, Certifier: &certifier{}, ObserveWrite: obs.observe})
	done := make(chan struct{})
	go func() {
		for _, n := range []string{"a", "b"} {
			if err := w.Store(t.Context(), secret(n), "default"); err != nil {
				t.Error(err)
			}
			// a fills the queue; b is written on a goroutine of its own.
			w.Claim("bookstore", n, ownerOf(n))
		}
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
	if created, _ := c.snapshot(); len(created) != 2 {
		t.Fatalf("created %v", created)
	}
}
