package pipeline

import (
	"testing"
	"time"
)

const (
	testQuiet    = 50 * time.Millisecond
	testMaxDelay = 500 * time.Millisecond
)

// fakeClock is a clock that moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestDebouncer(t *testing.T) (*debouncer, *fakeClock) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newDebouncer(testQuiet, testMaxDelay, clock.now)
	t.Cleanup(b.stop)
	return b, clock
}

// wantDue fails unless the pending burst is due at start+at.
func wantDue(t *testing.T, b *debouncer, start time.Time, at time.Duration) {
	t.Helper()
	got, ok := b.deadline()
	if !ok {
		t.Fatalf("nothing pending, want a compile due at +%s", at)
	}
	if got.Sub(start) != at {
		t.Fatalf("due at +%s, want +%s", got.Sub(start), at)
	}
}

func TestDebouncerLoneChangeCompilesAtOnce(t *testing.T) {
	b, clock := newTestDebouncer(t)
	if !b.changed(false) {
		t.Fatal("the first change, with nothing queued, did not compile at once")
	}
	b.fired()
	clock.advance(testQuiet)
	if !b.changed(false) {
		t.Fatal("a lone change a quiet period after the last compile did not compile at once")
	}
	if _, ok := b.deadline(); ok {
		t.Error("a change compiled at once left a compile pending")
	}
}

func TestDebouncerWaitsForQuietPeriod(t *testing.T) {
	b, clock := newTestDebouncer(t)
	b.fired()
	start := clock.now()

	// A change within the quiet period after a compile starts a burst.
	clock.advance(10 * time.Millisecond)
	if b.changed(false) {
		t.Fatal("a change 10ms after a compile compiled at once")
	}
	wantDue(t, b, start, 10*time.Millisecond+testQuiet)

	// Each further change pushes the compile back by the quiet period.
	clock.advance(30 * time.Millisecond)
	if b.changed(false) {
		t.Fatal("a change during a burst compiled at once")
	}
	wantDue(t, b, start, 40*time.Millisecond+testQuiet)

	b.fired()
	if _, ok := b.deadline(); ok {
		t.Error("a compile left the burst pending")
	}
}

// burst sends a change every 40ms for twice maxDelay, each with more
// queued behind it, so that no quiet period comes: each change pushes the
// compile back by the quiet period, up to maxDelay after the first change.
func burst(t *testing.T, b *debouncer, clock *fakeClock) {
	t.Helper()
	start := clock.now()
	for elapsed := time.Duration(0); elapsed < 2*testMaxDelay; elapsed += 40 * time.Millisecond {
		if b.changed(true) {
			t.Fatalf("a change at +%s with more queued behind it compiled at once", elapsed)
		}
		wantDue(t, b, start, min(elapsed+testQuiet, testMaxDelay))
		clock.advance(40 * time.Millisecond)
	}
}

func TestDebouncerMaxDelayBoundsABurst(t *testing.T) {
	b, clock := newTestDebouncer(t)
	burst(t, b, clock)
	// After the compile, a new burst gets a new bound.
	b.fired()
	burst(t, b, clock)
}

func TestDebouncerRetry(t *testing.T) {
	b, clock := newTestDebouncer(t)
	b.fired()
	start := clock.now()
	b.retry(time.Second)
	wantDue(t, b, start, testMaxDelay)
	b.fired()
	b.retry(10 * time.Millisecond)
	wantDue(t, b, start, 10*time.Millisecond)
	// A change during a pending retry joins it as a burst.
	clock.advance(5 * time.Millisecond)
	if b.changed(false) {
		t.Fatal("a change during a pending retry compiled at once")
	}
	wantDue(t, b, start, 5*time.Millisecond+testQuiet)
}

func TestDebouncerTimerFiresWhenDue(t *testing.T) {
	b := newDebouncer(20*time.Millisecond, 200*time.Millisecond, time.Now)
	defer b.stop()
	start := time.Now()
	if b.changed(true) {
		t.Fatal("a queued change compiled at once")
	}
	select {
	case <-b.C():
	case <-time.After(10 * time.Second):
		t.Fatal("C did not fire for a pending burst")
	}
	if elapsed := time.Since(start); elapsed < 20*time.Millisecond {
		t.Errorf("C fired after %s, before the quiet period", elapsed)
	}
	b.fired()
	select {
	case <-b.C():
		t.Error("C fired with nothing pending")
	case <-time.After(50 * time.Millisecond):
	}
}
