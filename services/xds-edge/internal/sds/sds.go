// Package sds obtains the service certificates the xds-edge serves over SDS.
// For each identity with a proxy on this edge it generates an ECDSA P-256 key
// locally, has a CSR signed by the cert-authority (osm.ca.v1 Sign), caches
// the result for every proxy of that identity, and renews it at half of its
// lifetime. The private key never leaves the edge.
//
// While the CA cannot sign (Vault unreachable, say), the certificates age
// past their renewal point. Two gauges show it, so an alert fires before
// any expires: osm_xds_service_cert_lifetime_remaining_min_ratio, the
// smallest fraction of its lifetime any held certificate has left, and
// osm_xds_service_certs_low_lifetime, how many have less than
// LowLifetime of it left (none while renewals succeed: they happen at
// half of the lifetime).
package sds

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// Signer is the part of the CA client the issuer uses.
type Signer interface {
	Sign(ctx context.Context, in *cav1.SignRequest, opts ...grpc.CallOption) (*cav1.SignResponse, error)
}

// Sink receives the certificates: the xDS server, which pushes them to the
// streams of their identity.
type Sink interface {
	SetCertificate(id identity.ID, chainPEM, keyPEM []byte, serial string) error
	DropCertificate(id identity.ID)
}

// Options configure an Issuer.
type Options struct {
	Signer Signer
	Sink   Sink
	Log    *logrus.Entry
	// TTL is the lifetime asked of the CA (which may shorten it) while
	// SetLifetime has set none; 0 asks none: the CA's --default-ttl.
	TTL time.Duration
	// AwaitLifetime, when positive, holds the first signatures back until
	// SetLifetime is first called or this long after New, so that the
	// certificates issued at start follow the MeshConfig; 0 does not wait.
	AwaitLifetime time.Duration
	// Linger keeps an identity's certificate (and renews it) this long after
	// its last proxy left, so that a reconnecting proxy needs no new
	// signature.
	Linger time.Duration
	// RetryMin and RetryMax bound the jittered exponential backoff after a
	// failed signature (see libs/backoff).
	RetryMin, RetryMax time.Duration
	// Meter makes the lifetime gauges; nil records none.
	Meter metric.Meter
}

// LowLifetime is the fraction of its lifetime under which a held
// certificate counts in osm_xds_service_certs_low_lifetime: the fault
// plan's alert threshold (F6), half of what a certificate has left when
// it is renewed.
const LowLifetime = 0.25

// Certificate is an issued service certificate.
type Certificate struct {
	ChainPEM, KeyPEM    []byte
	Serial              string
	NotBefore, NotAfter time.Time
}

// Issuer keeps one certificate per acquired identity. Each identity's
// signing and renewals run in a goroutine of their own, from Acquire until
// the identity is dropped or Start returns.
type Issuer struct {
	opts Options
	// base parents the renewals; Start cancels it when its context ends.
	base     context.Context
	stopBase context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	entries map[identity.ID]*entry

	// meshTTL is the lifetime SetLifetime set (see lifetime.go); known is
	// closed at its first call or after Options.AwaitLifetime.
	meshTTL   atomic.Int64
	known     chan struct{}
	knownOnce sync.Once
}

type entry struct {
	refs   int
	cancel context.CancelFunc
	linger *time.Timer
	cert   *Certificate
}

// New returns an issuer; Start bounds its renewals.
func New(o Options) (*Issuer, error) {
	if o.Signer == nil || o.Sink == nil || o.Log == nil {
		return nil, errors.New("sds: Signer, Sink and Log are required")
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(30*time.Second, o.RetryMin)
	}
	base, stop := context.WithCancel(context.Background())
	i := &Issuer{opts: o, base: base, stopBase: stop, entries: map[identity.ID]*entry{}, known: make(chan struct{})}
	if o.AwaitLifetime > 0 {
		time.AfterFunc(o.AwaitLifetime, func() { i.knownOnce.Do(func() { close(i.known) }) })
	} else {
		i.knownOnce.Do(func() { close(i.known) })
	}
	if o.Meter != nil {
		if err := i.gauges(o.Meter); err != nil {
			stop()
			return nil, fmt.Errorf("sds metrics: %w", err)
		}
	}
	return i, nil
}

// gauges registers the lifetime gauges, observed at each collection.
func (i *Issuer) gauges(m metric.Meter) error {
	minRatio, err := m.Float64ObservableGauge("osm_xds_service_cert_lifetime_remaining_min_ratio",
		metric.WithDescription("smallest fraction of its lifetime that any service certificate this edge holds has left (1 just issued, 0 expired; renewal is at 0.5); absent while it holds none"))
	if err != nil {
		return err
	}
	low, err := m.Int64ObservableGauge("osm_xds_service_certs_low_lifetime",
		metric.WithDescription("service certificates this edge holds with less than a quarter of their lifetime left (expired ones included): renewals are failing; alert when above 0"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ratio, n, held := i.Lifetimes(time.Now())
		if held > 0 {
			o.ObserveFloat64(minRatio, ratio)
		}
		o.ObserveInt64(low, int64(n))
		return nil
	}, minRatio, low)
	return err
}

// Lifetimes reports, at now, the smallest fraction of its lifetime any
// held certificate has left (0 once expired), how many have less than
// LowLifetime left, and how many are held.
func (i *Issuer) Lifetimes(now time.Time) (minRatio float64, low, held int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	minRatio = 1
	for _, e := range i.entries {
		c := e.cert
		if c == nil {
			continue
		}
		held++
		r := 0.0
		if life := c.NotAfter.Sub(c.NotBefore); life > 0 {
			r = min(max(float64(c.NotAfter.Sub(now))/float64(life), 0), 1)
		}
		minRatio = min(minRatio, r)
		if r < LowLifetime {
			low++
		}
	}
	return minRatio, low, held
}

// Start runs until ctx ends, then stops every renewal and returns once
// they have stopped.
func (i *Issuer) Start(ctx context.Context) error {
	<-ctx.Done()
	i.stopBase()
	i.wg.Wait()
	return nil
}

// Acquire starts keeping a certificate for id, or counts one more user of
// the one it keeps.
func (i *Issuer) Acquire(id identity.ID) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if e := i.entries[id]; e != nil {
		e.refs++
		if e.linger != nil {
			e.linger.Stop()
			e.linger = nil
		}
		return
	}
	ctx, cancel := context.WithCancel(i.base)
	e := &entry{refs: 1, cancel: cancel}
	i.entries[id] = e
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		i.maintain(ctx, id, e)
	}()
}

// Release counts one user of id less; after the last one, and Linger, the
// certificate is dropped and no longer renewed.
func (i *Issuer) Release(id identity.ID) {
	i.mu.Lock()
	defer i.mu.Unlock()
	e := i.entries[id]
	if e == nil || e.refs == 0 {
		return
	}
	e.refs--
	if e.refs > 0 {
		return
	}
	e.linger = time.AfterFunc(i.opts.Linger, func() {
		i.mu.Lock()
		drop := i.entries[id] == e && e.refs == 0
		if drop {
			delete(i.entries, id)
			e.cancel()
		}
		i.mu.Unlock()
		if drop {
			i.opts.Sink.DropCertificate(id)
		}
	})
}

// maintain issues the certificate of id and renews it at half-life until
// ctx ends.
func (i *Issuer) maintain(ctx context.Context, id identity.ID, e *entry) {
	log := i.opts.Log.WithField("identity", id.String())
	failures := 0
	if !i.awaitLifetime(ctx) {
		return
	}
	for {
		cert, err := i.issue(ctx, id)
		got := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait := backoff.Wait(i.opts.RetryMin, i.opts.RetryMax, failures)
			log.WithError(err).WithField("retry_in", wait.String()).Warn("service certificate not signed")
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		failures = 0
		i.mu.Lock()
		e.cert = cert
		i.mu.Unlock()
		if err := i.opts.Sink.SetCertificate(id, cert.ChainPEM, cert.KeyPEM, cert.Serial); err != nil {
			log.WithError(err).Error("service certificate not installed")
		}
		renew := renewAt(cert, got)
		log.WithFields(logrus.Fields{"serial": cert.Serial, "not_after": cert.NotAfter, "renew_at": renew}).Debug("service certificate issued")
		// A backdated or very short certificate must not make the loop spin.
		if !sleep(ctx, max(time.Until(renew), i.opts.RetryMin)) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// issue generates a key and has the CA sign it for id.
func (i *Issuer) issue(ctx context.Context, id identity.ID) (*Certificate, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := key.CSR(id)
	if err != nil {
		return nil, err
	}
	resp, err := i.sign(ctx, i.signRequest(csr, id))
	if err != nil {
		return nil, fmt.Errorf("sign csr for %s: %w", id, err)
	}
	chain := resp.GetCertificateChainPem()
	block, _ := pem.Decode(chain)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("sign csr for %s: the CA returned no PEM certificate", id)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign csr for %s: parse leaf: %w", id, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		return nil, fmt.Errorf("sign csr for %s: the CA returned a certificate for %v", id, leaf.URIs)
	}
	if !key.Private().PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("sign csr for %s: the certificate is not for the key the edge generated", id)
	}
	keyPEM, err := key.PEM()
	if err != nil {
		return nil, err
	}
	return &Certificate{ChainPEM: chain, KeyPEM: keyPEM, Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}
