package backoff

import (
	"testing"
	"time"
)

func TestWaitIsExponentialCappedAndJittered(t *testing.T) {
	base, ceiling := 10*time.Millisecond, 80*time.Millisecond
	seen := map[time.Duration]bool{}
	for attempt := 0; attempt <= 40; attempt++ {
		d := min(ceiling, base<<min(max(attempt-1, 0), 30))
		got := Wait(base, ceiling, attempt)
		if got < d/2 || got > d {
			t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, got, d/2, d)
		}
		seen[got] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits in 41: not jittered", len(seen))
	}
}
