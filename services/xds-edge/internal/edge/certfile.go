package edge

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certFile serves a key pair from files and reloads it when either file
// changes, so a rotated serving certificate (a Secret update) needs no
// restart. It checks the files at most once per interval.
type certFile struct {
	certPath, keyPath string
	interval          time.Duration
	now               func() time.Time

	mu        sync.Mutex
	pair      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	checkedAt time.Time
}

// loadCertFile loads the pair once, failing on a bad file.
func loadCertFile(certPath, keyPath string) (*certFile, error) {
	c := &certFile{certPath: certPath, keyPath: keyPath, interval: 10 * time.Second, now: time.Now}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certFile) reload() error {
	ci, err := os.Stat(c.certPath)
	if err != nil {
		return err
	}
	ki, err := os.Stat(c.keyPath)
	if err != nil {
		return err
	}
	if c.pair != nil && ci.ModTime().Equal(c.certMod) && ki.ModTime().Equal(c.keyMod) {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return fmt.Errorf("load %s and %s: %w", c.certPath, c.keyPath, err)
	}
	c.pair, c.certMod, c.keyMod = &pair, ci.ModTime(), ki.ModTime()
	return nil
}

// get implements tls.Config.GetCertificate. A file that fails to load
// (for example half-written during a rotation) keeps the previous pair.
func (c *certFile) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.checkedAt) >= c.interval {
		c.checkedAt = now
		_ = c.reload()
	}
	return c.pair, nil
}
