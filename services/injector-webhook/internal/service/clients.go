package service

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/cpcert"
)

// kubeClients are the injector's Kubernetes clients.
type kubeClients struct {
	// typed speaks protobuf: the pod informer decodes every injected pod,
	// on the cores admission runs on, and JSON costs several times as much.
	typed kubernetes.Interface
	// dynamic reads the MeshConfig (custom resources stay JSON).
	dynamic dynamic.Interface
	// metadata lists the bootstrap Secrets without their data.
	metadata metadata.Interface
}

func newKubeClients(c Config) (*kubeClients, error) {
	restCfg, err := c.Kube.RESTConfig(Name)
	if err != nil {
		return nil, err
	}
	protoCfg := rest.CopyConfig(restCfg)
	protoCfg.ContentType = "application/vnd.kubernetes.protobuf"
	protoCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	typed, err := kubernetes.NewForConfig(protoCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	md, err := metadata.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata client: %w", err)
	}
	return &kubeClients{typed: typed, dynamic: dyn, metadata: md}, nil
}

// caConns are the injector's connections to the cert-authority.
type caConns struct {
	// boot carries Bootstrap, which needs no client certificate; nil when
	// the serving certificate comes from files.
	boot *grpc.ClientConn
	// sign carries Sign and the trust-bundle watch; it presents
	// --ca-client-cert-file when set, else own.
	sign *grpc.ClientConn
	// own is the injector's certificate from Bootstrap (its serving
	// certificate, which carries the injector's role); servingTLS sets it
	// before anything uses sign.
	own atomic.Pointer[cpcert.Cert]
}

// dialCAs connects to the cert-authority; the connections close at
// shutdown.
func dialCAs(rt *app.Runtime, c Config) (*caConns, error) {
	conns := &caConns{}
	var err error
	if !c.ServesFromFiles() {
		if conns.boot, err = c.CA.DialBootstrap(); err != nil {
			return nil, err
		}
		rt.OnShutdown("ca-bootstrap-client", func(context.Context) error { return conns.boot.Close() })
	}
	if conns.sign, err = c.CA.Dial(conns.ownClientCertificate); err != nil {
		return nil, err
	}
	rt.OnShutdown("ca-client", func(context.Context) error { return conns.sign.Close() })
	return conns, nil
}

// ownClientCertificate presents the injector's own certificate, once
// servingTLS holds it; none before.
func (c *caConns) ownClientCertificate(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.own.Load(); cert != nil {
		return cert.GetClientCertificate(i)
	}
	return &tls.Certificate{}, nil
}
