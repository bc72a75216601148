package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/certfile"
	"github.com/openservicemesh/osm/libs/cpcert"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// ownCert is the edge's own certificate (role xds-edge) from the
// cert-authority's Bootstrap, with the connection it renews over.
type ownCert struct {
	*cpcert.Cert
	conn *grpc.ClientConn
}

// bundleSource is the mesh-trust bundle as the edge applied it, for the
// renewal of the edge's own certificate.
type bundleSource struct {
	roots, signing func() ([]byte, error)
	changed        <-chan struct{}
}

// ownCert obtains the edge's own certificate through Bootstrap, over a
// connection of its own that presents none, when the edge bootstraps (nil
// otherwise). Its Start keeps renewing it at half of its lifetime, and at
// once when a bundle's signing root did not issue it (a root rotation's
// switch) or the bundle no longer verifies it.
func (c *config) ownCert(ctx context.Context, rt *app.Runtime, b bundleSource) (*ownCert, error) {
	if !c.bootstraps() {
		return nil, nil
	}
	conn, err := c.ca.DialBootstrap()
	if err != nil {
		return nil, err
	}
	cert, err := cpcert.New(cpcert.Options{
		Client: cav1.NewCertificateAuthorityServiceClient(conn), Role: cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE,
		TokenType: c.ca.Credential.TokenType(), Token: c.ca.Credential.Token, TTL: c.ca.OwnCertTTL, Log: rt.Log,
		Roots: b.roots, SigningRoot: b.signing, BundleChanged: b.changed,
	})
	if err == nil {
		err = cert.RenewUntilDone(ctx)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	rt.Health.AddReadyCheck("control-plane-certificate", cert.Check)
	return &ownCert{Cert: cert, conn: conn}, nil
}

// serverTLS is the ADS listener's mTLS configuration, serving own (the
// edge's own certificate) unless --tls-cert-file overrides it.
func (c *config) serverTLS(own *ownCert) (*tls.Config, error) {
	var get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if c.tlsCertFile != "" {
		pair, err := certfile.Load(c.tlsCertFile, c.tlsKeyFile, certfile.Options{})
		if err != nil {
			return nil, app.FlagError("tls-cert-file", "load the serving certificate: %v", err)
		}
		get = pair.GetCertificate
	} else {
		get = own.GetCertificate
	}
	var pool *x509.CertPool
	if c.tlsClientCAFile != "" {
		var err error
		if pool, err = caclient.PoolFromFile(c.tlsClientCAFile); err != nil {
			return nil, app.FlagError("tls-client-ca-file", "%v", err)
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: get, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}, nil
}
