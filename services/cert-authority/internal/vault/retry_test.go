package vault

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

func TestBackoffWaitIsJitteredAndCapped(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}.withDefaults()
	seen := map[time.Duration]bool{}
	for n := 1; n <= 30; n++ {
		for range 20 {
			w := b.wait(n)
			limit := min(b.Initial<<min(n-1, 20), b.Max)
			if w <= 0 || w > limit {
				t.Fatalf("attempt %d: wait %s outside (0, %s]", n, w, limit)
			}
			seen[w] = true
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct waits in 600 draws: not jittered", len(seen))
	}
}

func TestRetryStopsOnRefusalAndRespectsBudget(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Budget: 200 * time.Millisecond}
	calls := 0
	refused := &vaultapi.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{"uri_sans not allowed"}}
	n, err := b.retry(t.Context(), func(context.Context) error { calls++; return refused })
	if n != 1 || calls != 1 || !errors.Is(err, refused) {
		t.Fatalf("a 400 was retried: %d attempts, %v", n, err)
	}
	start := time.Now()
	down := errors.New("dial tcp 127.0.0.1:8200: connect: connection refused")
	n, err = b.retry(t.Context(), func(context.Context) error { return down })
	if took := time.Since(start); err != down || n < 3 || took > time.Second {
		t.Fatalf("retry while down: %d attempts in %s, %v", n, took, err)
	}
	calls = 0
	_, err = b.retry(t.Context(), func(context.Context) error {
		calls++
		if calls < 3 {
			return &vaultapi.ResponseError{StatusCode: http.StatusServiceUnavailable}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("recovery after two 503s: %d calls, %v", calls, err)
	}
}

func TestClassify(t *testing.T) {
	if err := classify(&vaultapi.ResponseError{StatusCode: 400, Errors: []string{"bad san"}}, "sign", "http://v", 1); pki.ReasonOf(err) != pki.ReasonProvider || !strings.Contains(err.Error(), "bad san") {
		t.Errorf("400: %v", err)
	}
	if err := classify(context.DeadlineExceeded, "sign", "http://v", 4); pki.ReasonOf(err) != pki.ReasonUnavailable || !strings.Contains(err.Error(), "no answer") || !strings.Contains(err.Error(), "4 attempts") {
		t.Errorf("timeout: %v", err)
	}
	if err := classify(&vaultapi.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, "sign", "http://v", 2); pki.ReasonOf(err) != pki.ReasonUnavailable || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("503: %v", err)
	}
}
