package box

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki holds the paths of the control plane's key material.
type pki struct {
	caCert, caKey           string
	servingCert, servingKey string
	serviceAccountKey       string
	serviceAccountPub       string
	tokenFile               string
	adminToken              string
}

// ensurePKI creates (or reuses) the cluster CA, the service-account signing
// key and the admin token under dir, and issues a fresh serving certificate
// for the apiserver that is valid for addr and the in-cluster names.
func ensurePKI(dir string, addr netip.Addr, serviceCIDR netip.Prefix, adminToken string) (pki, error) {
	p := pki{
		caCert:            filepath.Join(dir, "ca.crt"),
		caKey:             filepath.Join(dir, "ca.key"),
		servingCert:       filepath.Join(dir, "apiserver.crt"),
		servingKey:        filepath.Join(dir, "apiserver.key"),
		serviceAccountKey: filepath.Join(dir, "sa.key"),
		serviceAccountPub: filepath.Join(dir, "sa.pub"),
		tokenFile:         filepath.Join(dir, "tokens.csv"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pki{}, err
	}
	caCert, caKey, err := loadOrCreateCA(p.caCert, p.caKey)
	if err != nil {
		return pki{}, fmt.Errorf("cluster ca: %w", err)
	}
	if err := issueServingCert(p.servingCert, p.servingKey, caCert, caKey, addr, serviceCIDR); err != nil {
		return pki{}, fmt.Errorf("apiserver serving certificate: %w", err)
	}
	if err := ensureServiceAccountKey(p.serviceAccountKey, p.serviceAccountPub); err != nil {
		return pki{}, fmt.Errorf("service account key: %w", err)
	}
	p.adminToken, err = ensureTokenFile(p.tokenFile, adminToken)
	if err != nil {
		return pki{}, fmt.Errorf("token file: %w", err)
	}
	return p, nil
}

// ensureServiceAccountKey creates the ECDSA key that signs service account
// tokens unless it exists, and (re)writes its public half.
func ensureServiceAccountKey(keyPath, pubPath string) error {
	var key crypto.Signer
	b, err := os.ReadFile(keyPath)
	switch {
	case err == nil:
		if key, err = parseKey(b); err != nil {
			return fmt.Errorf("%s: %w", keyPath, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(keyPath, k); err != nil {
			return err
		}
		key = k
	default:
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	return writePEM(pubPath, "PUBLIC KEY", der, 0o644)
}

func loadOrCreateCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if certErr == nil && keyErr == nil {
		cert, err := parseCert(certPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", certPath, err)
		}
		key, err := parseKey(keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		return cert, key, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "kubebox-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func issueServingCert(certPath, keyPath string, ca *x509.Certificate, caKey crypto.Signer, addr netip.Addr, serviceCIDR netip.Prefix) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IP(addr.AsSlice())}
	// The first address of the service range is the kubernetes Service's
	// cluster IP, which in-cluster clients dial.
	ips = append(ips, net.IP(serviceCIDR.Masked().Addr().Next().AsSlice()))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost",
			"kubernetes",
			"kubernetes.default",
			"kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

// ensureTokenFile writes the kube-apiserver --token-auth-file with one admin
// user in group system:masters. An empty token reuses the file's token or
// generates a new one.
func ensureTokenFile(path, token string) (string, error) {
	if token == "" {
		if b, err := os.ReadFile(path); err == nil {
			if t, _, ok := strings.Cut(strings.TrimSpace(string(b)), ","); ok && t != "" {
				return t, nil
			}
		}
		buf := make([]byte, 24)
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		token = hex.EncodeToString(buf)
	}
	if strings.ContainsAny(token, ",\"\n") {
		return "", errors.New("--admin-token must not contain commas, quotes or newlines")
	}
	line := token + `,admin,admin,"system:masters"` + "\n"
	return token, os.WriteFile(path, []byte(line), 0o600)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it into place, so readers never see a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func parseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}
