package vault

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestTokenLossUnderLoad is fault F7 of the fault plan (docs/faults.md):
// the CA's Vault token is revoked, or expires, while signs flow. The
// provider logs in through Vault's Kubernetes auth method for real (a
// TokenReview by the harness apiserver) and four signers sign
// continuously, as edges renewing service certificates do:
//   - revoked: every token of the Kubernetes mount is revoked
//     (sys/leases/revoke-prefix) with the token keeper running;
//   - expired: the keeper is not running (its renewal never happened) and
//     the 3 s token runs out.
//
// Pass figure: recovered within 30 s (from the fault to the first sign
// that succeeds after it), 0 certificates missed (no sign fails), and
// one login per lost token, not one per concurrent signer (each login
// costs Vault a TokenReview at the apiserver). The figures are logged.
func TestTokenLossUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name     string
		roleOpts map[string]any
		keeper   bool
	}{
		{"revoked", map[string]any{"token_ttl": "1h"}, true},
		{"expired", map[string]any{"token_ttl": "3s", "token_max_ttl": "3s"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			role := "osm-ca-f7-" + tc.name
			saToken := kubernetesAuth(t, "vault-f7-"+tc.name, role, tc.roleOpts)
			lg, _ := testLog()
			p, err := New(Options{Address: vlt.URL(), Role: "mesh", Log: lg,
				Auth: AuthOptions{KubernetesRole: role, ServiceAccountToken: saToken}})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			loginAt := time.Now()
			if err := p.Login(ctx); err != nil {
				t.Fatalf("kubernetes login: %v", err)
			}
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			if tc.keeper {
				wg.Add(1)
				go func() { defer wg.Done(); _ = p.Start(runCtx) }()
			}

			type result struct {
				start, end time.Time
				err        error
			}
			var mu sync.Mutex
			var results []result
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := signReq(t, "/ns/f7/sa/signer-"+string(rune('a'+i)))
					for runCtx.Err() == nil {
						start := time.Now()
						_, err := p.Sign(runCtx, req)
						if runCtx.Err() != nil {
							return
						}
						mu.Lock()
						results = append(results, result{start, time.Now(), err})
						mu.Unlock()
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			time.Sleep(time.Second)
			loginsBefore, _ := p.Stats()
			var faultAt time.Time
			if tc.name == "revoked" {
				faultAt = time.Now()
				vlt.Root(t, http.MethodPut, "sys/leases/revoke-prefix/auth/kubernetes/login", nil)
			} else {
				// The 3 s token, issued at Login, runs out.
				faultAt = loginAt.Add(3 * time.Second)
			}
			// Within 2.5 s of the fault, before the token of the next
			// login (3 s again) expires in turn.
			time.Sleep(time.Until(faultAt.Add(2500 * time.Millisecond)))
			stop()
			wg.Wait()
			loginsAfter, _ := p.Stats()

			var missed, after int
			var recovered time.Duration = -1
			for _, r := range results {
				if r.err != nil {
					missed++
					t.Errorf("sign started %s after the fault failed: %v", r.start.Sub(faultAt).Round(time.Millisecond), r.err)
					continue
				}
				if !r.start.Before(faultAt) {
					after++
					if d := r.end.Sub(faultAt); recovered < 0 || d < recovered {
						recovered = d
					}
				}
			}
			if after == 0 || recovered < 0 || recovered > 30*time.Second {
				t.Fatalf("no sign succeeded within 30s of the fault (%d signs after it)", after)
			}
			if n := loginsAfter - loginsBefore; n != 1 {
				t.Errorf("%d logins for one lost token, want 1", n)
			}
			t.Logf("F7 %s: recovered %s after the fault; %d signs, %d after the fault, %d missed; logins %d -> %d",
				tc.name, recovered.Round(time.Millisecond), len(results), after, missed, loginsBefore, loginsAfter)
		})
	}
}
