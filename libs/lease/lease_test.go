package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// first is the term of a new lease key created at the tests' clock start,
// time.Unix(1_000_000, 0): the wall clock in ms.
const first = 1_000_000_000

// clock is a manual clock shared by the electors of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func store(t *testing.T) *bus.Store {
	t.Helper()
	s, _ := storeConn(t)
	return s
}

func storeConn(t *testing.T) (*bus.Store, *bus.Conn) {
	t.Helper()
	srv, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := c.EnsureBucket(t.Context(), bus.BucketLeases, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func elector(t *testing.T, s *bus.Store, holder string, c *clock) *Elector {
	t.Helper()
	e, err := New(s, Options{Key: "compiler", Holder: holder, TTL: 15 * time.Second, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestOneLeaderAndTakeover(t *testing.T) {
	s := store(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	a, b := elector(t, s, "compiler-a", c), elector(t, s, "compiler-b", c)
	ctx := t.Context()

	a.tryOnce(ctx)
	b.tryOnce(ctx)
	if !a.Leading() || b.Leading() || a.Term() != first {
		t.Fatalf("a leading=%v term=%d, b leading=%v", a.Leading(), a.Term(), b.Leading())
	}
	// Renewals keep the lease with a; b stays standby.
	for range 5 {
		c.Add(5 * time.Second)
		a.tryOnce(ctx)
		b.tryOnce(ctx)
		if !a.Leading() || b.Leading() {
			t.Fatal("the lease moved while its holder renewed it")
		}
	}
	// a dies (stops renewing); once the TTL has passed, b takes over with
	// a new term.
	c.Add(10 * time.Second)
	b.tryOnce(ctx)
	if b.Leading() {
		t.Fatal("b took over before the lease expired")
	}
	c.Add(6 * time.Second)
	b.tryOnce(ctx)
	if !b.Leading() || b.Term() != first+1 {
		t.Fatalf("b leading=%v term=%d after expiry", b.Leading(), b.Term())
	}
	// a comes back and learns it lost.
	a.tryOnce(ctx)
	if a.Leading() {
		t.Fatal("two leaders")
	}
	select {
	case v := <-a.Changes():
		if v {
			t.Fatal("a's last change says leading")
		}
	default:
		t.Fatal("a was not told it stopped leading")
	}
}

// failing makes every call fail, as a lost NATS connection would.
type failing struct{}

var errDown = errors.New("nats down")

func (failing) getLease(context.Context, string) (*meshv1.Lease, uint64, error) {
	return nil, 0, errDown
}
func (failing) create(context.Context, string, *meshv1.Lease) (uint64, error) { return 0, errDown }
func (failing) update(context.Context, string, *meshv1.Lease, uint64) (uint64, error) {
	return 0, errDown
}
func (failing) redeclare(context.Context) error { return errDown }

func TestStepsDownBeforeOthersCanTakeOver(t *testing.T) {
	s := store(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	a := elector(t, s, "compiler-a", c)
	a.tryOnce(t.Context())
	if !a.Leading() {
		t.Fatal("a did not acquire")
	}
	a.store = failing{}
	c.Add(9 * time.Second)
	a.tryOnce(t.Context())
	if !a.Leading() {
		t.Fatal("a stepped down before its renew deadline")
	}
	c.Add(2 * time.Second) // 11s > 2/3 of 15s
	a.tryOnce(t.Context())
	if a.Leading() {
		t.Fatal("a kept leading without renewing past its deadline")
	}
	// A standby could only take over at 15s: a stopped first.
}

func TestReleaseOnStop(t *testing.T) {
	s := store(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	a, b := elector(t, s, "compiler-a", c), elector(t, s, "compiler-b", c)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case v := <-a.Changes():
		if !v {
			t.Fatal("first change is not leading")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a did not lead")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Without waiting for the TTL, b takes the released lease.
	b.tryOnce(t.Context())
	if !b.Leading() || b.Term() != first+1 {
		t.Fatalf("b leading=%v term=%d after a released", b.Leading(), b.Term())
	}
}

// blocking holds every call until release is closed, as a NATS call that
// hangs on a stalled connection would.
type blocking struct{ release chan struct{} }

func (b blocking) getLease(ctx context.Context, _ string) (*meshv1.Lease, uint64, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil, 0, errDown
}
func (b blocking) create(context.Context, string, *meshv1.Lease) (uint64, error) { return 0, errDown }
func (b blocking) redeclare(context.Context) error                               { return errDown }
func (b blocking) update(context.Context, string, *meshv1.Lease, uint64) (uint64, error) {
	return 0, errDown
}

// TestLeadingEndsAtTheDeadlineWhileACallHangs (issue 15, item 4): the
// holder's campaign hangs in a NATS call past its renew deadline; Leading,
// asked before each write, turns false at the deadline, not when the hung
// call returns, so the holder writes nothing once a standby may lead.
func TestLeadingEndsAtTheDeadlineWhileACallHangs(t *testing.T) {
	s := store(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	a := elector(t, s, "compiler-a", c)
	a.tryOnce(t.Context())
	if !a.Leading() || a.Term() != first {
		t.Fatal("a did not acquire")
	}
	hang := blocking{release: make(chan struct{})}
	a.store = hang
	done := make(chan struct{})
	go func() { a.tryOnce(t.Context()); close(done) }()
	c.Add(9 * time.Second)
	if !a.Leading() {
		t.Fatal("a stopped leading before its renew deadline")
	}
	c.Add(2 * time.Second) // 11s > 2/3 of 15s, the renewal still hung
	if a.Leading() || a.Term() != 0 {
		t.Fatalf("a leads (term %d) past its deadline while its renewal hangs", a.Term())
	}
	close(hang.release)
	<-done
	if a.Leading() {
		t.Fatal("a leads again after the hung call failed")
	}
}

// TestRestartedHolderTakesOverAtOnce: a process restarted under the same
// holder name (the same pod) takes over the lease its predecessor held at
// its first look, with a new term, instead of waiting out the TTL; the
// predecessor, were it alive, steps down and does not take it back.
func TestRestartedHolderTakesOverAtOnce(t *testing.T) {
	s := store(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	ctx := t.Context()
	old := elector(t, s, "compiler-a", c)
	standby := elector(t, s, "compiler-b", c)
	old.tryOnce(ctx)
	standby.tryOnce(ctx)
	if !old.Leading() || old.Term() != first {
		t.Fatalf("old leading=%v term=%d", old.Leading(), old.Term())
	}
	c.Add(time.Second)
	restarted := elector(t, s, "compiler-a", c)
	restarted.tryOnce(ctx)
	if !restarted.Leading() || restarted.Term() != first+1 {
		t.Fatalf("the restarted holder: leading=%v term=%d, want leading with the next term at once (1 s into a 15 s lease)", restarted.Leading(), restarted.Term())
	}
	standby.tryOnce(ctx)
	if standby.Leading() {
		t.Fatal("the standby took a lease its holder just renewed")
	}
	// The predecessor, still alive (two processes with one name): it
	// steps down, and neither takes the lease from the other afterwards.
	for range 6 {
		c.Add(5 * time.Second)
		old.tryOnce(ctx)
		restarted.tryOnce(ctx)
		if old.Leading() || !restarted.Leading() || restarted.Term() != first+1 {
			t.Fatalf("old leading=%v, restarted leading=%v term=%d: the lease changed hands again", old.Leading(), restarted.Leading(), restarted.Term())
		}
	}
}

// TestLostBucketIsDeclaredAgainWithAGreaterTerm: the lease bucket deleted
// under its holder (an operator, or JetStream lost its store) is declared
// again at the next look, and the lease created in it has a term greater
// than every term before, so the holder can claim the buckets it fences
// (bus.Store.Claim refuses a term not above the one they hold). Before, the
// holder could no longer read its lease, stepped down at its deadline, and
// nobody led again.
func TestLostBucketIsDeclaredAgainWithAGreaterTerm(t *testing.T) {
	s, conn := storeConn(t)
	c := &clock{now: time.Unix(1_000_000, 0)}
	ctx := t.Context()
	a, b := elector(t, s, "compiler-a", c), elector(t, s, "compiler-b", c)
	a.tryOnce(ctx)
	b.tryOnce(ctx)
	// Takeovers raise the term past the first.
	for range 3 {
		c.Add(16 * time.Second)
		b.tryOnce(ctx)
		a, b = b, a
	}
	before := a.Term()
	if before != first+3 {
		t.Fatalf("term %d after three takeovers, want %d", before, first+3)
	}
	if err := conn.JetStream().DeleteKeyValue(ctx, bus.BucketLeases); err != nil {
		t.Fatal(err)
	}
	// The clock stands still: the new term must come from the terms seen.
	for range 3 {
		a.tryOnce(ctx)
		b.tryOnce(ctx)
	}
	var leader *Elector
	switch {
	case b.Leading() && !a.Leading():
		leader = b
	case a.Leading() && !b.Leading():
		leader = a
	default:
		t.Fatalf("after the bucket was lost: a leading=%v, b leading=%v; want exactly one", a.Leading(), b.Leading())
	}
	if leader.Term() <= before {
		t.Fatalf("the new lease's term %d is not above the lost one's %d: the fenced buckets would refuse it", leader.Term(), before)
	}
}
