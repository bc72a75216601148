package reconcile

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// testRoot is a CA certificate with its key.
type testRoot struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestRoot(t *testing.T, name string) *testRoot {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testRoot{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issuer is a hand-written fake of webhook.Issuer and of the trust bundle:
// it signs certificates of ttl, with the identity's URI SAN for the usage,
// with its signing root and serves its bundle. The reconciler gets it
// through a real webhook.Certifier (certifier).
type issuer struct {
	ttl     time.Duration
	mu      sync.Mutex
	signer  *testRoot
	bundle  []byte
	calls   []string // namespace/sa, of the xDS client certificates
	usages  []identity.Usage
	changed chan struct{}
}

// certifier is the Certifier that issues with i.
func (i *issuer) certifier() *webhook.Certifier {
	return &webhook.Certifier{Issuer: i, TrustDomain: "cluster.local"}
}

func newIssuer(t *testing.T, ttl time.Duration) (*issuer, *testRoot) {
	r := newTestRoot(t, "root-a")
	return &issuer{ttl: ttl, signer: r, bundle: r.pem, changed: make(chan struct{}, 1)}, r
}

func (i *issuer) Issue(_ context.Context, id identity.ID, u identity.Usage) (*webhook.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if u == identity.UsageXDSClient {
		i.calls = append(i.calls, id.Namespace+"/"+id.ServiceAccount)
	}
	i.usages = append(i.usages, u)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), NotBefore: now, NotAfter: now.Add(i.ttl),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{id.URLFor(u)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.signer.cert, &key.PublicKey, i.signer.key)
	if err != nil {
		return nil, err
	}
	return &webhook.Certificate{ChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: []byte("key"), TrustPEM: i.bundle}, nil
}

func (i *issuer) roots() ([]byte, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.bundle, nil
}

// rotate signs with signer from now on and makes roots the bundle.
func (i *issuer) rotate(signer *testRoot, roots ...*testRoot) {
	i.mu.Lock()
	i.signer, i.bundle = signer, nil
	for _, r := range roots {
		i.bundle = append(i.bundle, r.pem...)
	}
	i.mu.Unlock()
	i.changed <- struct{}{}
}

// issued returns the identities issued for in namespace ns: the
// reconciler watches the whole cluster, where other tests' pods may
// linger.
func (i *issuer) issued(ns string) []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []string
	for _, c := range i.calls {
		if strings.HasPrefix(c, ns+"/") {
			out = append(out, c)
		}
	}
	return out
}

// podWithSecret creates an injected pod and its bootstrap Secret, with a
// certificate from iss, as the writer would.
func podWithSecret(t *testing.T, ns, uuid string, iss *issuer) *corev1.Pod {
	t.Helper()
	cs := cluster.Clientset()
	pod, err := cs.CoreV1().Pods(ns).Create(t.Context(), injectedPod("renewed", uuid), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec := bootstrapSecret(ns, uuid)
	if err := iss.certifier().Certify(t.Context(), sec, "default"); err != nil {
		t.Fatal(err)
	}
	sec.OwnerReferences = ownerRefs(nil, []*corev1.Pod{pod})
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pod
}

// secretLeaf reads the Secret's certificate and ca.crt.
func secretLeaf(ctx context.Context, ns, name string) (*x509.Certificate, []byte, error) {
	sec, err := cluster.Clientset().CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	leaf, err := webhook.Leaf(sec.Data[bootstrap.FileCert])
	return leaf, sec.Data[bootstrap.FileCA], err
}

// TestCertificateIsRenewedBeforeTwoThirdsOfItsLifetime: issue 15, item 1.
// A bootstrap certificate was written once and never renewed, so a sidecar
// outlived it. The Secret exists before the reconciler starts (as after a
// restart: the schedule comes from the Secret), and its certificate must
// be replaced before two thirds of each lifetime, for three lifetimes.
func TestCertificateIsRenewedBeforeTwoThirdsOfItsLifetime(t *testing.T) {
	const ttl, lifetimes = 6 * time.Second, 3
	ns := cluster.Namespace(t, "renew", nil)
	iss, _ := newIssuer(t, ttl)
	pod := podWithSecret(t, ns, "uuid-renew", iss)
	start(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour, Issuer: iss.certifier(), Roots: iss.roots, RootsChanged: iss.changed})

	name := "envoy-bootstrap-uuid-renew"
	cur, _, err := secretLeaf(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	var fractions []string
	end := cur.NotBefore.Add(lifetimes * ttl)
	replaced := 0
	for time.Now().Before(end) {
		if time.Now().After(cur.NotAfter) {
			t.Fatalf("certificate %s expired unrenewed (renewed at %v of the lifetime before)", cur.SerialNumber, fractions)
		}
		time.Sleep(50 * time.Millisecond)
		leaf, _, err := secretLeaf(t.Context(), ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.Cmp(cur.SerialNumber) == 0 {
			continue
		}
		// Seen within 50 ms of the update; the certificate's times have a
		// one-second resolution.
		life := cur.NotAfter.Sub(cur.NotBefore)
		at := time.Since(cur.NotBefore)
		fractions = append(fractions, fmt.Sprintf("%.2f", at.Seconds()/life.Seconds()))
		if at >= life*2/3 {
			t.Fatalf("certificate replaced %s into its %s lifetime, past two thirds", at, life)
		}
		cur = leaf
		replaced++
	}
	t.Logf("%d renewals of %s certificates in %d lifetimes, at %v of their lifetime", replaced, ttl, lifetimes, fractions)
	// Half-life renewal: two per lifetime (the first lifetime's first
	// half may start before the reconciler).
	if replaced < 2*lifetimes-1 {
		t.Fatalf("%d renewals in %d lifetimes", replaced, lifetimes)
	}
	for _, c := range iss.issued(ns) {
		if c != ns+"/"+pod.Spec.ServiceAccountName {
			t.Fatalf("issued for %s, want the pod's identity", c)
		}
	}
}

// TestTrustBundleChangeRewritesTheSecrets: after a root rotation the
// sidecars must trust the new root (ca.crt rewritten at once, not at the
// next renewal), and a certificate whose issuer left the bundle is
// reissued.
func TestTrustBundleChangeRewritesTheSecrets(t *testing.T) {
	ns := cluster.Namespace(t, "trust", nil)
	iss, rootA := newIssuer(t, time.Hour)
	podWithSecret(t, ns, "uuid-trust", iss)
	_, acts := start(t, Options{MissingGrace: time.Hour, OrphanGrace: time.Hour, Issuer: iss.certifier(), Roots: iss.roots, RootsChanged: iss.changed})
	name := "envoy-bootstrap-uuid-trust"
	first, _, err := secretLeaf(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	rootB := newTestRoot(t, "root-b")

	// Step 1: both roots; A still signs. ca.crt follows; the certificate
	// still verifies and stays.
	start := time.Now()
	iss.rotate(rootA, rootA, rootB)
	both := append(append([]byte(nil), rootA.pem...), rootB.pem...)
	apptest.Eventually(t, "ca.crt holds both roots", 10*time.Second, func() error {
		_, ca, err := secretLeaf(t.Context(), ns, name)
		if err == nil && !bytes.Equal(ca, both) {
			err = fmt.Errorf("ca.crt has %d bytes", len(ca))
		}
		return err
	})
	t.Logf("both roots in ca.crt %s after the bundle changed", time.Since(start).Round(time.Millisecond))
	if leaf, _, _ := secretLeaf(t.Context(), ns, name); leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the certificate was reissued though the bundle still verifies it")
	}

	// Step 3: only B. The certificate from A no longer verifies: reissued.
	start = time.Now()
	iss.rotate(rootB, rootB)
	apptest.Eventually(t, "a certificate from root B, and ca.crt B only", 10*time.Second, func() error {
		leaf, ca, err := secretLeaf(t.Context(), ns, name)
		if err != nil {
			return err
		}
		if !bytes.Equal(ca, rootB.pem) {
			return fmt.Errorf("ca.crt has %d bytes", len(ca))
		}
		if leaf.CheckSignatureFrom(rootB.cert) != nil {
			return fmt.Errorf("certificate %s still from root A", leaf.SerialNumber)
		}
		return nil
	})
	t.Logf("certificate reissued from the new root %s after the old root left the bundle", time.Since(start).Round(time.Millisecond))
	if got := iss.issued(ns); len(got) != 2 {
		t.Fatalf("certificates issued for %v, want 2 (the first, and one from root B)", got)
	}
	if acts.count("trust-updated") < 1 {
		t.Fatal("no trust-updated action observed")
	}
}
