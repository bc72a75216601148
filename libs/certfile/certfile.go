// Package certfile serves a TLS key pair from two PEM files and reloads it
// when either file changes, so a certificate rotated on disk (a Secret
// update, a cert-manager renewal) is picked up without a restart. A pair
// that fails to load, for example one half-written during a rotation, keeps
// the last good pair in service.
package certfile

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultInterval is how often, at most, the files are checked for a change.
const DefaultInterval = 10 * time.Second

// Options tune a Pair; the zero value is production.
type Options struct {
	// Interval bounds how often the files' modification times are read;
	// zero means DefaultInterval.
	Interval time.Duration
	// Now is the clock; nil means time.Now. A test override.
	Now func() time.Time
}

// Pair is a key pair loaded from files, reloaded when they change.
type Pair struct {
	certPath, keyPath string
	interval          time.Duration
	now               func() time.Time

	mu        sync.Mutex
	pair      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	checkedAt time.Time
}

// Load reads the pair once; a missing or invalid pair is an error.
func Load(certPath, keyPath string, o Options) (*Pair, error) {
	p := &Pair{certPath: certPath, keyPath: keyPath, interval: o.Interval, now: o.Now}
	if p.interval <= 0 {
		p.interval = DefaultInterval
	}
	if p.now == nil {
		p.now = time.Now
	}
	if err := p.reload(); err != nil {
		return nil, err
	}
	p.checkedAt = p.now()
	return p, nil
}

// reload reads the files when their modification times changed.
func (p *Pair) reload() error {
	ci, err := os.Stat(p.certPath)
	if err != nil {
		return err
	}
	ki, err := os.Stat(p.keyPath)
	if err != nil {
		return err
	}
	if p.pair != nil && ci.ModTime().Equal(p.certMod) && ki.ModTime().Equal(p.keyMod) {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(p.certPath, p.keyPath)
	if err != nil {
		return fmt.Errorf("load %s and %s: %w", p.certPath, p.keyPath, err)
	}
	p.pair, p.certMod, p.keyMod = &pair, ci.ModTime(), ki.ModTime()
	return nil
}

// Current returns the pair in service, first checking the files when the
// interval has passed.
func (p *Pair) Current() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := p.now(); now.Sub(p.checkedAt) >= p.interval {
		p.checkedAt = now
		_ = p.reload() // a failed reload keeps the last good pair
	}
	return p.pair
}

// GetCertificate implements tls.Config.GetCertificate.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Current(), nil
}

// GetClientCertificate implements tls.Config.GetClientCertificate.
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.Current(), nil
}
