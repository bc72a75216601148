// Package access is how the osm CLI reaches the mesh's components for the
// data the Kubernetes API does not hold: the xds-edges' debug API.
//
// Two paths share everything but the dialing (a Dialer):
//   - on a cluster, as istioctl does, through the Kubernetes API: the
//     chart's Services name the pods, and client-go's port-forward opens a
//     local port to each (PortForward);
//   - against the dev stack and the test harness, which run the components
//     as processes with no kubelet to forward to, a context file they write
//     (libs/osmctx) names the components' addresses (ContextFile).
//
// Then, either way: the CLI asks the Kubernetes API for a short-lived token
// of the ServiceAccount osm-operator (TokenRequest; only users the chart's
// Role osm-operator-token is bound to, and cluster admins, may), exchanges
// it at the cert-authority's Bootstrap for an operator certificate
// (spiffe://<trust-domain>/osm/operator, 15 minutes, key in memory only),
// and calls each edge's debug API over mutual TLS with it, verifying the
// edge's certificate against the mesh's roots and its SPIFFE id.
package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// OperatorServiceAccount is the ServiceAccount, in the control plane's
// namespace, whose token the cert-authority exchanges for the operator
// role (its --role-service-accounts); TokenRole is the chart's Role that
// allows creating that token.
const (
	OperatorServiceAccount = "osm-operator"
	TokenRole              = "osm-operator-token"
	// TokenAudience is the audience the cert-authority's Bootstrap
	// requires (the chart's global.certAuthority.tokenAudience).
	TokenAudience = "osm-cert-authority"
)

// certTTL is the operator certificate's lifetime; tokenTTL the token's,
// the least the apiserver issues.
const (
	certTTL  = 15 * time.Minute
	tokenTTL = 10 * time.Minute
)

// Endpoint is a component's listener as the CLI dials it.
type Endpoint struct {
	// Name is the pod's name.
	Name string
	// Addr is the host:port to dial (a local port-forward on a cluster).
	Addr string
	// ServerName verifies the cert-authority's certificate.
	ServerName string
}

// Dialer finds the components' listeners: the only part that differs
// between a cluster and the dev stack.
type Dialer interface {
	// CertAuthority is one cert-authority's gRPC listener.
	CertAuthority(ctx context.Context) (Endpoint, error)
	// Edges are the debug API listeners of every ready edge.
	Edges(ctx context.Context) ([]Endpoint, error)
	// CARoots are the PEM roots that verify the cert-authority.
	CARoots(ctx context.Context) ([]byte, error)
	// Close ends what the dialer opened (port-forwards).
	Close()
}

// Client reaches the edges' debug API as the operator.
type Client struct {
	kube      kubernetes.Interface
	namespace string
	dialer    Dialer

	mu   sync.Mutex
	cert *caclient.Issued
}

// New returns a client; kube makes the token request in namespace (the
// control plane's).
func New(kube kubernetes.Interface, namespace string, d Dialer) *Client {
	return &Client{kube: kube, namespace: namespace, dialer: d}
}

// Close closes the dialer.
func (c *Client) Close() { c.dialer.Close() }

// operatorCert returns the operator certificate, obtaining it once.
func (c *Client) operatorCert(ctx context.Context) (*caclient.Issued, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil {
		return c.cert, nil
	}
	token, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	ca, err := c.dialer.CertAuthority(ctx)
	if err != nil {
		return nil, err
	}
	roots, err := c.dialer.CARoots(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := caclient.Dial(ca.Addr, &meshv1.TrustBundle{Roots: []*meshv1.TrustRoot{{CertificatePem: roots}}}, ca.ServerName, nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	issued, err := caclient.Bootstrap(ctx, cav1.NewCertificateAuthorityServiceClient(conn), caclient.BootstrapRequest{
		Token: token, TokenType: cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT, Role: cav1.ComponentRole_COMPONENT_ROLE_OPERATOR, TTL: certTTL})
	if err != nil {
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated:
			return nil, fmt.Errorf("the cert-authority %s refused the operator certificate: %w (its --role-service-accounts must map operator=%s/%s and --token-audiences include %s)",
				ca.Name, err, c.namespace, OperatorServiceAccount, TokenAudience)
		}
		return nil, fmt.Errorf("cert-authority %s at %s: %w", ca.Name, ca.Addr, err)
	}
	if issued.Bundle == nil || len(issued.Bundle.GetRoots()) == 0 {
		return nil, fmt.Errorf("cert-authority %s returned no trust bundle with the operator certificate", ca.Name)
	}
	c.cert = issued
	return issued, nil
}

// token is a short-lived token of the operator ServiceAccount. Errors say
// what to do: the RBAC to add, or the install to check.
func (c *Client) token(ctx context.Context) (string, error) {
	tr, err := c.kube.CoreV1().ServiceAccounts(c.namespace).CreateToken(ctx, OperatorServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{TokenAudience}, ExpirationSeconds: ptr(int64(tokenTTL / time.Second))},
	}, metav1.CreateOptions{})
	switch {
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("permission denied: you may not create a token for ServiceAccount %s/%s, which osm exchanges for the operator certificate the edges' debug API requires.\n"+
			"A cluster admin can allow you with the chart's Role %s:\n  kubectl create rolebinding %s-<you> -n %s --role=%s --user=<you>\n(%v)",
			c.namespace, OperatorServiceAccount, TokenRole, TokenRole, c.namespace, TokenRole, err)
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("ServiceAccount %s/%s not found: no mesh in namespace %s has operator access (check --namespace, or run osm upgrade to add it)",
			c.namespace, OperatorServiceAccount, c.namespace)
	case err != nil:
		return "", fmt.Errorf("token for ServiceAccount %s/%s: %w", c.namespace, OperatorServiceAccount, err)
	}
	return tr.Status.Token, nil
}

func ptr[T any](v T) *T { return &v }

// Edge is one edge's debug API.
type Edge struct {
	Name string
	addr string
	http *http.Client
}

// Edges returns a client of every ready edge's debug API.
func (c *Client) Edges(ctx context.Context) ([]*Edge, error) {
	eps, err := c.dialer.Edges(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := c.operatorCert(ctx)
	if err != nil {
		return nil, err
	}
	roots, err := caclient.RootPool(cert.Bundle)
	if err != nil {
		return nil, err
	}
	td := trustDomain(cert.Pair.Leaf)
	tc := edgeTLS(cert.Pair, roots, identity.ControlPlaneURI(td, identity.RoleXDSEdge).String())
	out := make([]*Edge, 0, len(eps))
	for _, ep := range eps {
		out = append(out, &Edge{Name: ep.Name, addr: ep.Addr, http: &http.Client{
			Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false}, Timeout: 30 * time.Second}})
	}
	return out, nil
}

// trustDomain is the host of the operator certificate's SPIFFE id.
func trustDomain(leaf *x509.Certificate) string {
	if leaf != nil && len(leaf.URIs) == 1 {
		return leaf.URIs[0].Host
	}
	return ""
}

// edgeTLS verifies an edge as a proxy does: its chain against the mesh's
// roots and its URI SAN against the edge's SPIFFE id (not a host name).
func edgeTLS(cert tls.Certificate, roots *x509.CertPool, edgeID string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the edge sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return fmt.Errorf("the edge's certificate: %w", err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != edgeID {
				return fmt.Errorf("the edge's certificate names %v, want %s", leaf.URIs, edgeID)
			}
			return nil
		},
	}
}

// StatusError is an answer of the debug API other than 200.
type StatusError struct {
	Edge    string
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("edge %s answered %d: %s", e.Edge, e.Code, e.Message)
}

// Get fetches path (an edgedebug path, with its query) into v.
func (e *Edge) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+e.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("edge %s at %s: %w", e.Name, e.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("edge %s: %w", e.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		var apiErr edgedebug.Error
		msg := string(b)
		if json.Unmarshal(b, &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		return &StatusError{Edge: e.Name, Code: resp.StatusCode, Message: msg}
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("edge %s: %s: %w", e.Name, path, err)
	}
	return nil
}

// Close closes the edge's idle connections.
func (e *Edge) Close() { e.http.CloseIdleConnections() }
