package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Limit is a token bucket: Rate calls per second on average, Burst at once.
// A zero Rate turns the limit off.
type Limit struct {
	Rate  float64
	Burst int
}

// Limits pace the RPCs that cost the CA a signature, per caller, before any
// other work: Bootstrap per client address (its caller has no certificate
// yet, and each call would cost a TokenReview), Sign per client
// certificate.
type Limits struct {
	Bootstrap Limit
	Sign      Limit
}

// DefaultLimits let a whole control plane bootstrap from one node at once
// and an edge that restarts sign for thousands of identities in seconds,
// and stop a flood from one caller before it costs the apiserver or the
// signer much: a P-256 signature is about 50 µs, so 1,000 a second is 5 %
// of a core.
var DefaultLimits = Limits{
	Bootstrap: Limit{Rate: 2, Burst: 20},
	Sign:      Limit{Rate: 1000, Burst: 5000},
}

// callerLimiter holds one token bucket per caller. Buckets of callers idle
// for idleAfter are dropped when the map grows, so that callers coming and
// going (new pod addresses) do not grow it without bound.
type callerLimiter struct {
	rpc   string
	limit Limit

	mu      sync.Mutex
	callers map[string]*callerBucket
	swept   time.Time
}

type callerBucket struct {
	lim  *rate.Limiter
	last time.Time
}

const (
	idleAfter    = 10 * time.Minute
	sweepAtCount = 4096
)

func newCallerLimiter(rpc string, l Limit) *callerLimiter {
	return &callerLimiter{rpc: rpc, limit: l, callers: map[string]*callerBucket{}}
}

// allow takes a token for caller, or returns ResourceExhausted saying when
// to retry.
func (c *callerLimiter) allow(caller string) error {
	if c == nil || c.limit.Rate <= 0 {
		return nil
	}
	now := time.Now()
	c.mu.Lock()
	b := c.callers[caller]
	if b == nil {
		if len(c.callers) >= sweepAtCount && now.Sub(c.swept) > time.Second {
			for k, v := range c.callers {
				if now.Sub(v.last) > idleAfter {
					delete(c.callers, k)
				}
			}
			c.swept = now
		}
		b = &callerBucket{lim: rate.NewLimiter(rate.Limit(c.limit.Rate), max(c.limit.Burst, 1))}
		c.callers[caller] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if delay > 0 {
		r.CancelAt(now)
	}
	c.mu.Unlock()
	if delay > 0 {
		return status.Errorf(codes.ResourceExhausted, "too many %s calls from this caller (limit %g per second, burst %d); retry in %s",
			c.rpc, c.limit.Rate, max(c.limit.Burst, 1), delay.Round(time.Millisecond))
	}
	return nil
}

// callerAddress is the caller's IP address, without its port: a Bootstrap
// caller's identity before it has proved anything.
func callerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// callerCertificate names the caller by its verified client certificate
// (one per component replica), falling back to its address.
func callerCertificate(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			sum := sha256.Sum256(ti.State.VerifiedChains[0][0].Raw)
			return "cert:" + hex.EncodeToString(sum[:8])
		}
	}
	return fmt.Sprintf("addr:%s", callerAddress(ctx))
}
