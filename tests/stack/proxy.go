package stack

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DialEdge connects to an xds-edge as a proxy holding cert, verifying the
// edge as Envoy does: its chain against roots and its URI SAN against
// edgeID (not a host name).
func DialEdge(addr string, cert tls.Certificate, roots *x509.CertPool, edgeID string) (*grpc.ClientConn, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the edge sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != edgeID {
				return fmt.Errorf("edge identity %v, want %s", leaf.URIs, edgeID)
			}
			return nil
		},
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}
