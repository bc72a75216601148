package service

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
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
	restCfg, err := restConfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// client-go's default of 5 requests per second would throttle the
	// Secret creations and time admissions out under load.
	restCfg.QPS, restCfg.Burst = float32(c.KubeQPS), c.KubeBurst
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

// restConfig is the Kubernetes client configuration: --kubeconfig, or the
// in-cluster service account when it is empty.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, app.FlagError("kubeconfig", "not in a cluster and no kubeconfig given: %v", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, app.FlagError("kubeconfig", "%v", err)
	}
	return cfg, nil
}

// caConns are the injector's connections to the cert-authority.
type caConns struct {
	// boot carries Bootstrap, which needs no client certificate.
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
	if conns.boot, err = dialCA(c, false, nil); err != nil {
		return nil, err
	}
	rt.OnShutdown("ca-bootstrap-client", func(context.Context) error { return conns.boot.Close() })
	conns.sign, err = dialCA(c, true, func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert := conns.own.Load(); cert != nil {
			return cert.GetClientCertificate(i)
		}
		return &tls.Certificate{}, nil
	})
	if err != nil {
		return nil, err
	}
	rt.OnShutdown("ca-client", func(context.Context) error { return conns.sign.Close() })
	return conns, nil
}

// dialCA connects to the cert-authority. For signing (and the bundle
// watch) it presents --ca-client-cert-file when set, else the certificate
// own returns; for Bootstrap (signing false), nothing.
func dialCA(c Config, signing bool, own func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*grpc.ClientConn, error) {
	tc, err := caclient.TLSFromFile(c.CATrustFile, c.CAServerName)
	if err != nil {
		return nil, app.FlagError("ca-trust-file", "%v", err)
	}
	switch {
	case !signing:
	case c.CACertFile != "":
		pair, err := tls.LoadX509KeyPair(c.CACertFile, c.CAKeyFile)
		if err != nil {
			return nil, app.FlagError("ca-client-cert-file", "%v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case own != nil:
		tc.GetClientCertificate = own
	default:
		return nil, app.FlagError("ca-client-cert-file", "is required: the serving certificate comes from files, so there is no certificate from the cert-authority to present")
	}
	conn, err := grpc.NewClient(c.CAAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, app.FlagError("ca-addr", "%v", err)
	}
	return conn, nil
}
