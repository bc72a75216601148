package pipeline

import "time"

// debouncer decides when observed changes are compiled. A lone change
// after a quiet spell (no change pending, none queued behind it, and no
// compile within the quiet period) compiles at once. Any other change joins
// a burst, which is due when no change has come for the quiet period, and
// at the latest maxDelay after the burst began. C fires when a pending
// burst is due. A debouncer is not safe for concurrent use.
type debouncer struct {
	quiet, maxDelay time.Duration
	now             func() time.Time
	timer           *time.Timer

	due   time.Time // the pending burst's last change plus quiet; zero when none is pending
	limit time.Time // the pending burst's first change plus maxDelay
	last  time.Time // the last compile
}

// newDebouncer returns a debouncer with nothing pending; now is its clock.
func newDebouncer(quiet, maxDelay time.Duration, now func() time.Time) *debouncer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &debouncer{quiet: quiet, maxDelay: maxDelay, now: now, timer: t}
}

// C fires when a pending burst is due; then call fired.
func (b *debouncer) C() <-chan time.Time { return b.timer.C }

// stop releases the timer.
func (b *debouncer) stop() { b.timer.Stop() }

// pending reports whether a burst waits to be compiled.
func (b *debouncer) pending() bool { return !b.due.IsZero() }

// changed records an observed change. queued says whether more changes
// wait to be read. It reports whether to compile at once; otherwise the
// change joins the pending burst and C fires when the burst is due.
func (b *debouncer) changed(queued bool) bool {
	now := b.now()
	if !b.pending() && !queued && now.Sub(b.last) >= b.quiet {
		return true
	}
	b.schedule(now, b.quiet)
	return false
}

// retry makes a compile due again after wait, or maxDelay if that is
// sooner.
func (b *debouncer) retry(wait time.Duration) { b.schedule(b.now(), wait) }

// fired records a compile: nothing is pending after it.
func (b *debouncer) fired() {
	b.due, b.limit = time.Time{}, time.Time{}
	b.last = b.now()
	b.timer.Stop()
}

// deadline is when the pending burst is due; ok is false when nothing is
// pending.
func (b *debouncer) deadline() (at time.Time, ok bool) {
	if !b.pending() {
		return time.Time{}, false
	}
	if b.limit.Before(b.due) {
		return b.limit, true
	}
	return b.due, true
}

// schedule makes the pending burst due after wait, bounded by maxDelay from
// the burst's first change, and arms the timer.
func (b *debouncer) schedule(now time.Time, wait time.Duration) {
	b.due = now.Add(wait)
	if b.limit.IsZero() {
		b.limit = now.Add(b.maxDelay)
	}
	at, _ := b.deadline()
	b.timer.Reset(at.Sub(now))
}
