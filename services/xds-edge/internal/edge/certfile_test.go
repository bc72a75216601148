package edge

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openservicemesh/osm/services/xds-edge/xdstest"
)

func TestServingCertificateIsReloaded(t *testing.T) {
	dir := t.TempDir()
	ca, err := xdstest.NewCA("r")
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(uri string, mod time.Time) {
		_, c, k, err := ca.Leaf(uri)
		if err != nil {
			t.Fatal(err)
		}
		for p, b := range map[string][]byte{certPath: c, keyPath: k} {
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mod, mod); err != nil {
				t.Fatal(err)
			}
		}
	}
	uriOf := func(cf *certFile) string {
		pair, _ := cf.get(nil)
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.URIs[0].String()
	}
	base := time.Now().Add(-time.Hour)
	write("spiffe://cluster.local/osm/old", base)
	cf, err := loadCertFile(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cf.now = func() time.Time { return now }
	if got := uriOf(cf); got != "spiffe://cluster.local/osm/old" {
		t.Fatalf("serving %s", got)
	}
	write("spiffe://cluster.local/osm/new", base.Add(time.Minute))
	if got := uriOf(cf); got != "spiffe://cluster.local/osm/old" {
		t.Errorf("reloaded within the check interval: %s", got)
	}
	now = now.Add(cf.interval)
	if got := uriOf(cf); got != "spiffe://cluster.local/osm/new" {
		t.Errorf("after the interval still serving %s", got)
	}
	// A broken file during a rotation keeps the last good pair.
	if err := os.WriteFile(keyPath, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(cf.interval)
	if got := uriOf(cf); got != "spiffe://cluster.local/osm/new" {
		t.Errorf("a broken file replaced the pair: %s", got)
	}
	if _, err := loadCertFile(certPath, keyPath); err == nil {
		t.Error("a broken pair loaded at start")
	}
}
