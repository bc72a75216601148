package vault

import (
	"context"
	"errors"
	"net/http"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/openservicemesh/osm/libs/backoff"
)

// Backoff paces the retries of one Vault call: capped, jittered exponential
// waits (libs/backoff) within a time budget.
type Backoff struct {
	// Initial is the first wait's upper bound; default 100ms.
	Initial time.Duration
	// Max caps each wait; default 2s.
	Max time.Duration
	// Budget bounds the total time spent retrying one call; default 10s.
	Budget time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 2 * time.Second
	}
	if b.Budget <= 0 {
		b.Budget = 10 * time.Second
	}
	return b
}

// wait returns the jittered wait before retry n (n >= 1).
func (b Backoff) wait(n int) time.Duration { return backoff.Wait(b.Initial, b.Max, n) }

// retryable reports whether err is worth retrying: Vault unreachable or not
// answering, sealed or standby (5xx), or rate limiting (429).
func retryable(err error) bool {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	}
	return !errors.Is(err, context.Canceled)
}

// retry runs op until it succeeds, fails with a non-retryable error, ctx
// ends, or the budget is spent; it returns the last error and the number of
// attempts.
func (b Backoff) retry(ctx context.Context, op func(ctx context.Context) error) (int, error) {
	b = b.withDefaults()
	deadline := time.Now().Add(b.Budget)
	for n := 1; ; n++ {
		err := op(ctx)
		if err == nil || !retryable(err) {
			return n, err
		}
		w := b.wait(n)
		if time.Now().Add(w).After(deadline) {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, err
		case <-time.After(w):
		}
	}
}
