package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/backoff"
)

// AuthOptions says how the provider logs in to Vault. Kubernetes auth is
// used when KubernetesRole is set; Token is the fallback.
type AuthOptions struct {
	// KubernetesMount is the Kubernetes auth method's mount; default
	// "kubernetes".
	KubernetesMount string
	// KubernetesRole is the Vault role to log in as.
	KubernetesRole string
	// ServiceAccountToken returns the CA's ServiceAccount token (read fresh
	// at every login, as projected tokens rotate). Default: read
	// /var/run/secrets/kubernetes.io/serviceaccount/token.
	ServiceAccountToken func() (string, error)
	// Token is a static Vault token, used when KubernetesRole is empty. It
	// is renewed while renewable but cannot be replaced once it expires.
	Token string
	// RenewFraction is the part of the lease after which the token is
	// renewed; default 2/3.
	RenewFraction float64
}

// DefaultServiceAccountTokenFile is where Kubernetes mounts the pod's token.
const DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// TokenFile returns a ServiceAccountToken function reading path.
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read service account token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// authenticator owns the client's token.
type authenticator struct {
	client  *vaultapi.Client
	o       AuthOptions
	backoff Backoff
	log     *logrus.Entry

	// loginMu serializes logins, so that callers denied together log in
	// once (see reloginAfter).
	loginMu sync.Mutex

	mu        sync.Mutex
	token     string
	lease     time.Duration // lease of the current token, 0 if it never expires
	increment time.Duration // the lease asked for at each renewal
	renewAt   time.Time
	renew     bool // the token is renewable
	logins    int
	renewals  int
	wake      chan struct{}
}

func newAuthenticator(c *vaultapi.Client, o AuthOptions, b Backoff, log *logrus.Entry) *authenticator {
	if o.KubernetesMount == "" {
		o.KubernetesMount = "kubernetes"
	}
	if o.ServiceAccountToken == nil {
		o.ServiceAccountToken = TokenFile(DefaultServiceAccountTokenFile)
	}
	if o.RenewFraction <= 0 || o.RenewFraction >= 1 {
		o.RenewFraction = 2.0 / 3
	}
	return &authenticator{client: c, o: o, backoff: b, log: log, wake: make(chan struct{}, 1)}
}

// canLogin reports whether a new token can be obtained (Kubernetes auth).
func (a *authenticator) canLogin() bool { return a.o.KubernetesRole != "" }

func (a *authenticator) hasToken() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token != ""
}

func (a *authenticator) stats() (int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.logins, a.renewals
}

// loginCount is the number of logins so far: a call that Vault denies
// passes the count it read before it started to reloginAfter.
func (a *authenticator) loginCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.logins
}

// reloginAfter logs in again after a call that started when seen logins
// had happened was denied, unless another caller has logged in since:
// many calls denied at once (a revoked or expired token under load) make
// one login, not one each, and so one TokenReview at the apiserver.
func (a *authenticator) reloginAfter(ctx context.Context, seen int) error {
	a.loginMu.Lock()
	defer a.loginMu.Unlock()
	if a.loginCount() != seen {
		return nil
	}
	return a.loginLocked(ctx)
}

// login gets a token: a Kubernetes auth login, or a lookup of the static
// token to learn its lease.
func (a *authenticator) login(ctx context.Context) error {
	a.loginMu.Lock()
	defer a.loginMu.Unlock()
	return a.loginLocked(ctx)
}

// loginLocked is login; a.loginMu is held.
func (a *authenticator) loginLocked(ctx context.Context) error {
	var auth *vaultapi.SecretAuth
	var what string
	var increment time.Duration
	if a.canLogin() {
		what = "kubernetes login"
		jwt, err := a.o.ServiceAccountToken()
		if err != nil {
			return err
		}
		anon, err := a.client.Clone()
		if err != nil {
			return err
		}
		anon.ClearToken()
		path := "auth/" + a.o.KubernetesMount + "/login"
		var s *vaultapi.Secret
		n, err := a.backoff.retry(ctx, func(ctx context.Context) error {
			var err error
			s, err = anon.Logical().WriteWithContext(ctx, path, map[string]any{"role": a.o.KubernetesRole, "jwt": jwt})
			return err
		})
		if err != nil {
			return classify(err, what, a.client.Address(), n)
		}
		if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
			return errors.New("vault kubernetes login returned no token")
		}
		auth = s.Auth
	} else {
		what = "token lookup"
		if a.o.Token == "" {
			return errors.New("vault: neither a Kubernetes role nor a token is configured")
		}
		c, err := a.client.Clone()
		if err != nil {
			return err
		}
		c.SetToken(a.o.Token)
		var s *vaultapi.Secret
		n, err := a.backoff.retry(ctx, func(ctx context.Context) error {
			var err error
			s, err = c.Auth().Token().LookupSelfWithContext(ctx)
			return err
		})
		if err != nil {
			return classify(err, what, a.client.Address(), n)
		}
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		auth = &vaultapi.SecretAuth{ClientToken: a.o.Token, LeaseDuration: int(ttl / time.Second), Renewable: renewable}
		// Renew by the token's own period, not by what was left of it.
		if n, err := parseutilSeconds(s.Data["creation_ttl"]); err == nil && n > 0 {
			increment = time.Duration(n) * time.Second
		}
	}
	a.mu.Lock()
	a.token = auth.ClientToken
	a.client.SetToken(auth.ClientToken)
	a.logins++
	a.setLeaseLocked(time.Duration(auth.LeaseDuration)*time.Second, auth.Renewable)
	a.increment = increment
	if a.increment == 0 {
		a.increment = a.lease
	}
	lease := a.lease
	a.mu.Unlock()
	a.log.WithContext(ctx).WithFields(logrus.Fields{"method": what, "lease": lease.String(), "renewable": auth.Renewable}).Info("vault token acquired")
	a.poke()
	return nil
}

func (a *authenticator) setLeaseLocked(lease time.Duration, renewable bool) {
	a.lease, a.renew = lease, renewable
	if lease > 0 {
		a.renewAt = time.Now().Add(time.Duration(float64(lease) * a.o.RenewFraction))
	} else {
		a.renewAt = time.Time{}
	}
}

func (a *authenticator) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run renews the token before it expires until ctx ends. After a failed
// refresh (which has spent its retry budget) it tries again after a
// jittered wait that grows from the backoff's Max up to its Budget.
func (a *authenticator) run(ctx context.Context) error {
	b := a.backoff.withDefaults()
	failures := 0
	for {
		a.mu.Lock()
		// A static token that cannot be renewed is left alone until it
		// expires; there is nothing to do for it.
		at, hasLease := a.renewAt, a.lease > 0 && (a.renew || a.canLogin())
		a.mu.Unlock()
		var timer <-chan time.Time
		if hasLease {
			timer = time.After(max(time.Until(at), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
			continue
		case <-timer:
		}
		err := a.refresh(ctx)
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() == nil:
			failures++
			wait := backoff.Wait(b.Max, max(b.Budget, b.Max), failures)
			a.log.WithContext(ctx).WithError(err).WithField("retry_in", wait.String()).Warn("vault token refresh failed; retrying")
			a.mu.Lock()
			a.renewAt = time.Now().Add(wait)
			a.mu.Unlock()
		}
	}
}

// refresh renews the token, or logs in again when renewal fails or would
// leave less than a renewal period (the token reached its max TTL).
func (a *authenticator) refresh(ctx context.Context) error {
	a.mu.Lock()
	renewable, increment := a.renew, a.increment
	a.mu.Unlock()
	if renewable {
		var s *vaultapi.Secret
		_, err := a.backoff.retry(ctx, func(ctx context.Context) error {
			var err error
			s, err = a.client.Auth().Token().RenewSelfWithContext(ctx, int(increment/time.Second))
			return err
		})
		if err == nil && s != nil && s.Auth != nil {
			got := time.Duration(s.Auth.LeaseDuration) * time.Second
			if got >= increment/2 || !a.canLogin() {
				a.mu.Lock()
				a.renewals++
				a.setLeaseLocked(got, s.Auth.Renewable)
				a.mu.Unlock()
				a.log.WithContext(ctx).WithField("lease", got.String()).Debug("vault token renewed")
				return nil
			}
			a.log.WithContext(ctx).WithField("lease", got.String()).Info("vault token is near its max TTL; logging in again")
		} else if err != nil {
			a.log.WithContext(ctx).WithError(err).Warn("vault token renewal failed")
		}
	}
	if !a.canLogin() {
		return errors.New("the static vault token cannot be renewed and there is no Kubernetes auth to log in again")
	}
	return a.login(ctx)
}

// parseutilSeconds reads a number of seconds from a JSON field.
func parseutilSeconds(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	case nil:
		return 0, errors.New("absent")
	}
	return 0, fmt.Errorf("not a number: %T", v)
}
