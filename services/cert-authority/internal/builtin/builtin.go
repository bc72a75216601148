// Package builtin is the cert-authority's built-in provider: ECDSA P-256
// roots kept in Kubernetes Secrets in the control-plane namespace, and
// leaves signed in process.
//
// Each root lives in its own Secret (keys ca.crt and ca.key). A root is
// created if absent: the CA generates a root and creates the Secret; when
// another replica won the race the create fails with AlreadyExists and the
// CA reads the winner's Secret back, so replicas that start together end up
// with one root.
//
// # Root rotation
//
// The rotation is three configuration edits; each is safe to repeat and
// survives a restart because the state is the configuration plus the
// Secrets:
//
//  1. Add a new root: keep --root-secret=osm-ca-root and set
//     --trusted-root-secrets=osm-ca-root-2. The CA creates osm-ca-root-2 if
//     absent and publishes a bundle with both roots; it still issues from
//     osm-ca-root. Wait until every xds-edge serves the new bundle version.
//  2. Issue from the new root: --root-secret=osm-ca-root-2
//     --trusted-root-secrets=osm-ca-root. New leaves chain to the new root,
//     and the old root stays trusted. Wait at least the longest leaf
//     lifetime (--max-ttl) so that every old leaf has been renewed.
//  3. Remove the old root: --root-secret=osm-ca-root-2 and
//     --trusted-root-secrets empty. The bundle holds only the new root.
//     Delete the osm-ca-root Secret when you no longer need it.
package builtin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// Keys of a root Secret.
const (
	CertKey = "ca.crt"
	KeyKey  = "ca.key"
)

// ManagedByLabel marks the Secrets the CA created.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// Options configures Load.
type Options struct {
	// Client talks to the apiserver.
	Client kubernetes.Interface
	// Namespace is the control-plane namespace holding the root Secrets.
	Namespace string
	// SigningSecret names the Secret of the root that issues.
	SigningSecret string
	// TrustedSecrets name the Secrets of roots that stay trusted but do not
	// issue (rotation steps 1 and 2).
	TrustedSecrets []string
	// TrustDomain goes into generated roots.
	TrustDomain string
	// RootValidity is the lifetime of a generated root; default 10 years.
	RootValidity time.Duration
	// Log receives one line per root loaded or created.
	Log *logrus.Entry
}

// Provider issues leaves from the configured signing root.
type Provider struct {
	roots *pki.RootSet
}

// Load reads (creating if absent) every configured root Secret and returns
// the provider.
func Load(ctx context.Context, o Options) (*Provider, error) {
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	signing, err := EnsureRoot(ctx, o, o.SigningSecret)
	if err != nil {
		return nil, err
	}
	var trusted = make([]*pki.Issuer, 0, len(o.TrustedSecrets))
	for _, name := range o.TrustedSecrets {
		iss, err := EnsureRoot(ctx, o, name)
		if err != nil {
			return nil, err
		}
		trusted = append(trusted, iss)
	}
	certs := make([]*x509.Certificate, 0, len(trusted))
	for _, t := range trusted {
		certs = append(certs, t.Certificate())
	}
	return &Provider{roots: pki.NewRootSet(signing, certs...)}, nil
}

// NewProvider returns a provider over an already loaded root set.
func NewProvider(roots *pki.RootSet) *Provider { return &Provider{roots: roots} }

// Roots is the provider's rotation state.
func (p *Provider) Roots() *pki.RootSet { return p.roots }

// Sign issues a leaf for r from the signing root. The context is unused:
// signing is local and fast.
func (p *Provider) Sign(_ context.Context, r pki.SignRequest) (*pki.Leaf, error) {
	return p.roots.Signing().Issue(pki.LeafRequest{PublicKey: r.CSR.PublicKey, SPKI: r.CSR.RawSubjectPublicKeyInfo, URI: r.URI, DNSNames: r.DNSNames, TTL: r.TTL})
}

// TrustBundle is the bundle of the configured roots.
func (p *Provider) TrustBundle(context.Context) (*meshv1.TrustBundle, error) {
	return p.roots.Bundle(), nil
}

// EnsureRoot returns the root stored in Secret name, generating and creating
// it when absent. Two replicas racing end with the same root: the loser's
// create fails with AlreadyExists and it reads the winner's Secret.
func EnsureRoot(ctx context.Context, o Options, name string) (*pki.Issuer, error) {
	secrets := o.Client.CoreV1().Secrets(o.Namespace)
	log := o.Log.WithFields(logrus.Fields{"namespace": o.Namespace, "name": name})
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		certPEM, keyPEM, gerr := pki.GenerateRoot(pki.RootOptions{TrustDomain: o.TrustDomain, Validity: o.RootValidity})
		if gerr != nil {
			return nil, fmt.Errorf("generate root for secret %s/%s: %w", o.Namespace, name, gerr)
		}
		s, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: map[string]string{ManagedByLabel: "osm-cert-authority"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{CertKey: certPEM, KeyKey: keyPEM},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			log.Info("created root secret")
		case apierrors.IsAlreadyExists(err):
			log.Info("another replica created the root secret; reading it back")
			s, err = secrets.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", o.Namespace, name, err)
	}
	iss, err := parseSecret(s)
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", o.Namespace, name, err)
	}
	log.WithFields(logrus.Fields{"issuer_id": iss.ID(), "not_after": iss.NotAfter().UTC()}).Info("loaded root")
	return iss, nil
}

func parseSecret(s *corev1.Secret) (*pki.Issuer, error) {
	c, k := s.Data[CertKey], s.Data[KeyKey]
	if len(c) == 0 || len(k) == 0 {
		return nil, errors.New("the secret lacks " + CertKey + " or " + KeyKey)
	}
	return pki.ParseIssuer(c, k)
}
