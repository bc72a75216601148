package caclient

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
)

// certFor returns a PEM certificate for key's public key, signed by
// signer (self-signed when signer is key).
func certFor(t *testing.T, key, signer *identity.Key) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.Private().PublicKey, signer.Private())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestIssuedChecksTheChainAgainstTheKey(t *testing.T) {
	key, _ := identity.NewKey()
	other, _ := identity.NewKey()
	chain := append(certFor(t, key, other), certFor(t, other, other)...)

	got, err := issued(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	// The same pair tls.X509KeyPair makes from the PEM.
	want, err := tls.X509KeyPair(chain, got.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pair.Certificate) != 2 || string(got.Pair.Certificate[1]) != string(want.Certificate[1]) ||
		got.Pair.Leaf == nil || !got.Pair.Leaf.NotAfter.Equal(got.NotAfter) {
		t.Fatalf("pair %d certificates, leaf %v", len(got.Pair.Certificate), got.Pair.Leaf)
	}

	for name, tc := range map[string]struct {
		chain []byte
		want  string
	}{
		"another key's certificate": {certFor(t, other, other), "does not hold the requested key"},
		"no certificate":            {[]byte("not PEM"), "no PEM certificate"},
		"a broken certificate":      {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x01}}), "unusable"},
	} {
		if _, err := issued(tc.chain, key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}
