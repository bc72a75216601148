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

func TestDebouncerQueuedChangeWaits(t *testing.T) {
	b, clock := newTestDebouncer(t)
	start := clock.now()
	if b.changed(true) {
		t.Fatal("a change with more queued behind it compiled at once")
	}
	wantDue(t, b, start, testQuiet)
}

func TestDebouncerMaxDelayBoundsABurst(t *testing.T) {
	b, clock := newTestDebouncer(t)
	start := clock.now()
	// A change every 40ms, never a quiet period: the burst is due
	// maxDelay after its first change.
	for elapsed := time.Duration(0); elapsed < 2*testMaxDelay; elapsed += 40 * time.Millisecond {
		if b.changed(true) {
			t.Fatalf("a change at +%s compiled at once", elapsed)
		}
		want := min(elapsed+testQuiet, testMaxDelay)
		wantDue(t, b, start, want)
		clock.advance(40 * time.Millisecond)
	}
	// After the compile, a new burst gets a new bound.
	b.fired()
	next := clock.now()
	if b.changed(true) {
		t.Fatal("a queued change compiled at once")
	}
	wantDue(t, b, next, testQuiet)
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
