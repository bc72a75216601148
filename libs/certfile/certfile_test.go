package certfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed pair whose URI SAN is uri, with the files'
// modification time set to mod.
func writePair(t *testing.T, certPath, keyPath, uri string, mod time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		certPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPath:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

func uriOf(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.URIs[0].String()
}

func TestPairIsReloadedAfterTheInterval(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	base := time.Now().Add(-time.Hour)
	writePair(t, certPath, keyPath, "spiffe://cluster.local/osm/old", base)
	now := time.Now()
	p, err := Load(certPath, keyPath, Options{Interval: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		c, err := p.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return uriOf(t, c)
	}
	if got := get(); got != "spiffe://cluster.local/osm/old" {
		t.Fatalf("serving %s", got)
	}
	writePair(t, certPath, keyPath, "spiffe://cluster.local/osm/new", base.Add(time.Minute))
	if got := get(); got != "spiffe://cluster.local/osm/old" {
		t.Errorf("reloaded within the check interval: %s", got)
	}
	now = now.Add(time.Minute)
	if got := get(); got != "spiffe://cluster.local/osm/new" {
		t.Errorf("after the interval still serving %s", got)
	}
	c, err := p.GetClientCertificate(nil)
	if err != nil || uriOf(t, c) != "spiffe://cluster.local/osm/new" {
		t.Errorf("client certificate: %v", err)
	}
	// A broken file during a rotation keeps the last good pair.
	if err := os.WriteFile(keyPath, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if got := get(); got != "spiffe://cluster.local/osm/new" {
		t.Errorf("a broken file replaced the pair: %s", got)
	}
	// A file removed during a rotation keeps it too.
	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if got := get(); got != "spiffe://cluster.local/osm/new" {
		t.Errorf("a missing file replaced the pair: %s", got)
	}
}

func TestLoadFailsOnABadPair(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := Load(certPath, keyPath, Options{}); err == nil {
		t.Error("missing files loaded")
	}
	writePair(t, certPath, keyPath, "spiffe://cluster.local/osm/x", time.Now())
	if err := os.WriteFile(keyPath, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(certPath, keyPath, Options{}); err == nil {
		t.Error("a broken pair loaded")
	}
}
