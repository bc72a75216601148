package caclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc/credentials"
)

// trustCreds are the gRPC transport credentials of a connection to the
// cert-authority. The roots that verify the CA are read at each handshake:
// those in the trust file, read again each time (a mounted ConfigMap or
// Secret that the kubelet updates, or a file a rotation rewrites), plus
// the extra roots the component follows (the current trust bundle). A
// connection opened after a root rotation's switch step therefore verifies
// the CA's new serving certificate without a restart.
type trustCreds struct {
	file       string
	serverName string
	extra      func() []byte
	clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

var _ credentials.TransportCredentials = (*trustCreds)(nil)

// roots is the pool of the trust file's certificates and the extra roots.
// A trust file that cannot be read or holds nothing is an error only when
// the extra roots hold nothing either.
func (t *trustCreds) roots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	b, fileErr := os.ReadFile(t.file)
	n := 0
	if fileErr == nil {
		if pool.AppendCertsFromPEM(b) {
			n++
		} else {
			fileErr = fmt.Errorf("%s holds no PEM certificate", t.file)
		}
	}
	if t.extra != nil {
		if extra := t.extra(); len(extra) > 0 && pool.AppendCertsFromPEM(extra) {
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("no roots verify the cert-authority: --ca-trust-file: %w", fileErr)
	}
	return pool, nil
}

func (t *trustCreds) config() (*tls.Config, error) {
	pool, err := t.roots()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: t.serverName, GetClientCertificate: t.clientCert}, nil
}

// ClientHandshake verifies the CA against the roots read now.
func (t *trustCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, err := t.config()
	if err != nil {
		return nil, nil, err
	}
	return credentials.NewTLS(tc).ClientHandshake(ctx, authority, raw)
}

// ServerHandshake is not supported: these are client credentials.
func (t *trustCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("caclient: the cert-authority client credentials do not serve")
}

// Info is TLS's.
func (t *trustCreds) Info() credentials.ProtocolInfo {
	return credentials.NewTLS(&tls.Config{ServerName: t.serverName}).Info()
}

// Clone copies the credentials.
func (t *trustCreds) Clone() credentials.TransportCredentials {
	c := *t
	return &c
}

// OverrideServerName sets the name the CA's certificate is verified
// against.
//
// Deprecated: as in grpc, use the dial's authority instead.
func (t *trustCreds) OverrideServerName(name string) error {
	t.serverName = name
	return nil
}
