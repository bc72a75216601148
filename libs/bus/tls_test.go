package bus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir and returns the server's TLS config.
func testPKI(t *testing.T, dir string) *tls.Config {
	t.Helper()
	return testPKIFor(t, dir, nil, []net.IP{net.ParseIP("127.0.0.1")})
}

// testPKIFor is testPKI with a server certificate for dnsNames and ips.
func testPKIFor(t *testing.T, dir string, dnsNames []string, serverIPs []net.IP) *tls.Config {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage, ips []net.IP, dns ...string) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	sc, sk := issue("nats", 2, x509.ExtKeyUsageServerAuth, serverIPs, dnsNames...)
	cc, ck := issue("edge", 3, x509.ExtKeyUsageClientAuth, nil)
	write("client.pem", cc)
	write("client-key.pem", ck)
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

func TestConnectMutualTLS(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, bustest.Options{TLS: testPKI(t, dir)})
	ctx := t.Context()
	c := connect(t, bus.Options{URL: srv.URL(), CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")})
	st, err := c.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "bundle", str("roots")); err != nil {
		t.Fatalf("put over mTLS: %v", err)
	}
	// Without a client certificate the server refuses the connection.
	if _, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), CAFile: filepath.Join(dir, "ca.pem"), ConnectTimeout: time.Second}); err == nil {
		t.Fatal("connected without a client certificate")
	}
	// A bad CA file is a clear configuration error.
	if _, err := bus.Connect(ctx, bus.Options{URL: srv.URL(), CAFile: filepath.Join(dir, "client-key.pem")}); err == nil {
		t.Fatal("accepted a CA file without a certificate")
	}
	if err := (bus.Options{URL: srv.URL(), CertFile: "x"}).Validate(); err == nil {
		t.Fatal("accepted a certificate without a key")
	}
}

// TestTLSServerNameVerifiesAServiceName: a server whose certificate names
// only its Service (as the chart's NATS certificate does) is refused when
// dialed by address, and verified against TLSServerName
// (--nats-tls-server-name) when that names the Service.
func TestTLSServerNameVerifiesAServiceName(t *testing.T) {
	dir := t.TempDir()
	const svc = "osm-nats.osm-system.svc"
	srv := startServer(t, bustest.Options{TLS: testPKIFor(t, dir, []string{svc}, nil)})
	o := bus.Options{URL: srv.URL(), CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem"), ConnectTimeout: 2 * time.Second}
	if c, err := bus.Connect(t.Context(), o); err == nil {
		c.Close()
		t.Fatal("a certificate naming only the Service was accepted for 127.0.0.1")
	}
	o.TLSServerName = svc
	c := connect(t, o)
	if _, err := c.EnsureBucket(t.Context(), bus.BucketTrust, bus.BucketOptions{}); err != nil {
		t.Fatalf("over TLS verified against %s: %v", svc, err)
	}
}
