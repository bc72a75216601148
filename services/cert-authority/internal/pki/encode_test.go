package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
)

// TestEncodedLeafMatchesStdlib builds the same leaf with the fast encoder
// and with x509.CreateCertificate and compares every field a verifier uses.
func TestEncodedLeafMatchesStdlib(t *testing.T) {
	root := mustRoot(t, time.Time{}, 0)
	k := csrtest.Key(t)
	uri, _ := url.Parse("spiffe://cluster.local/ns/a/sa/b")
	serial := big.NewInt(0).Lsh(big.NewInt(1), 127)
	nb, na := time.Now().Add(-time.Minute).Truncate(time.Second), time.Now().Add(time.Hour).Truncate(time.Second)
	far := time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC) // GeneralizedTime from 2050
	for i, dns := range [][]string{nil, {"ca.test", "osm-cert-authority.osm-system.svc"}, nil} {
		na := na
		if i == 2 {
			na = far
		}
		key, _ := canEncodeLeaf(root)
		spki, _ := spkiOf(&k.PublicKey)
		fastDER, err := encodeLeaf(root, key, leafFields{serial: serial, notBefore: nb, notAfter: na, spki: spki, uri: uri, dnsNames: dns})
		if err != nil {
			t.Fatal(err)
		}
		fast, err := x509.ParseCertificate(fastDER)
		if err != nil {
			t.Fatalf("stdlib cannot parse the encoded leaf: %v", err)
		}
		tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
			URIs: []*url.URL{uri}, DNSNames: dns}
		refDER, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, &k.PublicKey, root.key)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := x509.ParseCertificate(refDER)
		// The signed part is byte for byte what crypto/x509 produces.
		if !bytes.Equal(fast.RawTBSCertificate, ref.RawTBSCertificate) {
			t.Errorf("TBSCertificate differs from crypto/x509's:\n encoded %x\n  stdlib %x", fast.RawTBSCertificate, ref.RawTBSCertificate)
		}
		if err := fast.CheckSignatureFrom(root.cert); err != nil {
			t.Fatalf("signature: %v", err)
		}
		checks := map[string][2]any{
			"Version":               {fast.Version, ref.Version},
			"SerialNumber":          {fast.SerialNumber.String(), ref.SerialNumber.String()},
			"SignatureAlgorithm":    {fast.SignatureAlgorithm, ref.SignatureAlgorithm},
			"RawIssuer":             {fast.RawIssuer, ref.RawIssuer},
			"RawSubject":            {fast.RawSubject, ref.RawSubject},
			"NotBefore":             {fast.NotBefore, ref.NotBefore},
			"NotAfter":              {fast.NotAfter, ref.NotAfter},
			"PublicKey":             {fast.RawSubjectPublicKeyInfo, ref.RawSubjectPublicKeyInfo},
			"KeyUsage":              {fast.KeyUsage, ref.KeyUsage},
			"ExtKeyUsage":           {fast.ExtKeyUsage, ref.ExtKeyUsage},
			"BasicConstraintsValid": {fast.BasicConstraintsValid, ref.BasicConstraintsValid},
			"IsCA":                  {fast.IsCA, ref.IsCA},
			"AuthorityKeyId":        {fast.AuthorityKeyId, ref.AuthorityKeyId},
			"URIs":                  {fast.URIs[0].String(), ref.URIs[0].String()},
			"DNSNames":              {fast.DNSNames, ref.DNSNames},
		}
		for name, c := range checks {
			if !reflect.DeepEqual(c[0], c[1]) {
				t.Errorf("%s: encoded %v, stdlib %v", name, c[0], c[1])
			}
		}
		// The same extensions, with the same criticality and values.
		if len(fast.Extensions) != len(ref.Extensions) {
			t.Fatalf("%d extensions, stdlib has %d", len(fast.Extensions), len(ref.Extensions))
		}
		refExt := map[string]pkix.Extension{}
		for _, e := range ref.Extensions {
			refExt[e.Id.String()] = e
		}
		for _, e := range fast.Extensions {
			r, ok := refExt[e.Id.String()]
			if !ok || r.Critical != e.Critical || !bytes.Equal(r.Value, e.Value) {
				t.Errorf("extension %s: encoded critical=%v %x, stdlib %v", e.Id, e.Critical, e.Value, r)
			}
		}
	}
}

// TestIssueWithRSARootUsesStdlib covers the fallback for a root whose key
// is not P-256 (for example one an operator imported).
func TestIssueWithRSARootUsesStdlib(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rsa root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour * 24 * 365), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	c, _ := x509.ParseCertificate(der)
	iss, err := NewIssuer(c, rk)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := canEncodeLeaf(iss); ok {
		t.Fatal("the fast path accepted an RSA key")
	}
	k := csrtest.Key(t)
	l, err := iss.Issue(LeafRequest{PublicKey: &k.PublicKey, URI: identity.ControlPlaneURI(td, identity.RoleXDSEdge), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	lc, err := l.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatal(err)
	}
}

// TestAppendPEMMatchesStdlib: appendPEM writes what pem.EncodeToMemory
// does, and pemLen is its exact length.
func TestAppendPEMMatchesStdlib(t *testing.T) {
	data := make([]byte, 400)
	_, _ = rand.Read(data)
	for n := range len(data) {
		want := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: data[:n]})
		got := appendPEM([]byte("prefix"), "CERTIFICATE", data[:n])
		if string(got) != "prefix"+string(want) {
			t.Fatalf("%d bytes:\n got %q\nwant %q", n, got, want)
		}
		if l := pemLen("CERTIFICATE", n); l != len(want) {
			t.Fatalf("%d bytes: pemLen %d, want %d", n, l, len(want))
		}
	}
}
