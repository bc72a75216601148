package builtin

import (
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is a real kube-apiserver (tests/kube), started once.
var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, false)) }

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

// newClient gives each simulated replica its own connection.
func newClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func opts(t *testing.T, ns, signing string, trusted ...string) Options {
	return Options{Client: newClient(t), Namespace: ns, SigningSecret: signing, TrustedSecrets: trusted, TrustDomain: "cluster.local", Log: quietLog()}
}

// TestConcurrentStartEndsWithOneRoot starts replicas at the same moment
// against the real apiserver, several times, and checks they all agree on
// the one root stored in the Secret.
func TestConcurrentStartEndsWithOneRoot(t *testing.T) {
	ns := cluster.Namespace(t, "ca-race", nil)
	const replicas = 4
	for round := range 5 {
		name := fmt.Sprintf("osm-ca-root-%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		ids := make([]string, replicas)
		errs := make([]error, replicas)
		for i := range replicas {
			o := opts(t, ns, name)
			wg.Go(func() {
				<-start
				p, err := Load(t.Context(), o)
				if err != nil {
					errs[i] = err
					return
				}
				ids[i] = p.Roots().Signing().ID()
			})
		}
		close(start)
		wg.Wait()
		for i := range replicas {
			if errs[i] != nil {
				t.Fatalf("round %d replica %d: %v", round, i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("round %d: replica %d has root %s, replica 0 has %s", round, i, ids[i], ids[0])
			}
		}
		s, err := newClient(t).CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.ParseCertificatePEM(s.Data[CertKey])
		if err != nil || pki.RootID(c) != ids[0] {
			t.Fatalf("round %d: the Secret holds another root (%v)", round, err)
		}
		if s.Labels[ManagedByLabel] != "osm-cert-authority" || s.Type != "Opaque" {
			t.Errorf("secret labels %v type %s", s.Labels, s.Type)
		}
	}
}

// TestRotationAcrossRestarts walks the three rotation steps as
// configuration edits, restarting (reloading) the provider at every step and
// repeating each step, and checks leaves and bundles along the way.
func TestRotationAcrossRestarts(t *testing.T) {
	ns := cluster.Namespace(t, "ca-rotate", nil)
	ctx := t.Context()
	load := func(signing string, trusted ...string) *Provider {
		t.Helper()
		p, err := Load(ctx, opts(t, ns, signing, trusted...))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	csr := csrtest.Parsed(t, csrtest.Key(t))
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "bookstore", ServiceAccount: "bookbuyer"}
	sign := func(p *Provider) *x509.Certificate {
		t.Helper()
		l, err := p.Sign(ctx, pki.SignRequest{CSR: csr, URI: id.URL(), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	verify := func(p *Provider, leaf *x509.Certificate) error {
		b, _ := p.TrustBundle(ctx)
		pool, err := pki.BundlePool(b)
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool})
		return err
	}

	p0 := load("root-a")
	oldLeaf := sign(p0)
	oldID := p0.Roots().Signing().ID()

	// Step 1: add root-b; still issue from root-a.
	p1 := load("root-a", "root-b")
	b1, _ := p1.TrustBundle(ctx)
	if len(b1.Roots) != 2 || p1.Roots().Signing().ID() != oldID {
		t.Fatalf("step 1: %d roots, signing %s", len(b1.Roots), p1.Roots().Signing().ID())
	}
	if again, _ := load("root-a", "root-b").TrustBundle(ctx); again.Version != b1.Version {
		t.Fatalf("repeating step 1 changed the bundle: %s -> %s", b1.Version, again.Version)
	}
	// Step 2: issue from root-b, keep root-a trusted.
	p2 := load("root-b", "root-a")
	newID := p2.Roots().Signing().ID()
	if newID == oldID {
		t.Fatal("step 2 still signs with the old root")
	}
	newLeaf := sign(p2)
	if err := verify(p2, oldLeaf); err != nil {
		t.Errorf("step 2: an old leaf no longer verifies during the overlap: %v", err)
	}
	if err := verify(p2, newLeaf); err != nil {
		t.Errorf("step 2: new leaf: %v", err)
	}
	if again := load("root-b", "root-a"); again.Roots().Signing().ID() != newID {
		t.Fatal("repeating step 2 after a restart changed the signing root")
	}
	// Step 3: drop root-a.
	p3 := load("root-b")
	b3, _ := p3.TrustBundle(ctx)
	if len(b3.Roots) != 1 || b3.Roots[0].Id != newID || !b3.Roots[0].Signing {
		t.Fatalf("step 3 bundle: %v", b3.Roots)
	}
	if err := verify(p3, newLeaf); err != nil {
		t.Errorf("step 3: new leaf: %v", err)
	}
	if err := verify(p3, oldLeaf); err == nil {
		t.Error("step 3: a leaf of the removed root still verifies")
	}
}

func TestCorruptSecretIsAnError(t *testing.T) {
	ns := cluster.Namespace(t, "ca-corrupt", nil)
	_, err := newClient(t).CoreV1().Secrets(ns).Create(t.Context(), secretWith(ns, "bad", map[string][]byte{CertKey: []byte("x")}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(t.Context(), opts(t, ns, "bad")); err == nil {
		t.Fatal("Load accepted a Secret without a key")
	}
}

func secretWith(ns, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}
