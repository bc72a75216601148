// Package backoff computes the waits between retries: exponential, capped,
// and jittered so that replicas retrying the same failure do not retry in
// step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Wait is the wait before retry number attempt (1 for the first retry): d =
// min(base·2^(attempt-1), ceiling), drawn uniformly from [d/2, d].
func Wait(base, ceiling time.Duration, attempt int) time.Duration {
	d := base << min(max(attempt-1, 0), 30)
	if d > ceiling || d <= 0 {
		d = ceiling
	}
	return d/2 + rand.N(d/2+1)
}
