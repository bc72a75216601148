package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestMeshConfigCertValidityFlow runs the MeshConfig's
// spec.certificate.serviceCertValidityDuration through the real apiserver,
// the watcher (mesh-observed), an edge and the real cert-authority to xDS
// clients: the service certificate a proxy receives over SDS has the
// MeshConfig's lifetime (plus the CA's one-minute backdate); after an
// edit, the next certificate issued (a proxy of another identity) has the
// new one; a lifetime over the CA's --max-ttl (48h) is cut to it and the
// CA logs the clamp.
func TestMeshConfigCertValidityFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	ns, meshName, mcName := "certttl"+run, "certttl"+run, "certttl-mesh-config"+run
	namespace(t, "osm-system", nil)
	sas := []string{"one", "two", "three"}
	namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sas...)
	meshConfig(t, mcName, true)
	if err := patchMeshConfig(t, mcName, `{"spec":{"certificate":{"serviceCertValidityDuration":"2h"}}}`); err != nil {
		t.Fatal(err)
	}
	kubelet := node(t, "certttl-node")
	for i, sa := range sas {
		readyPod(t, kubelet, ns, sa+"-1", sa, sa, fmt.Sprintf("10.244.41.%d", 10+i))
	}
	m := startMesh(t, stack.Options{Name: "certttl", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)

	// lifetimeOf is the validity of the service certificate the edge
	// serves a proxy of sa over SDS.
	lifetimeOf := func(sa string) time.Duration {
		t.Helper()
		cert, err := m.WorkloadCert(ctx, identityOf(ns, sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := m.DialEdge(cert.Pair)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		p := &proxyConn{t: t, cc: cc, node: nodeOf(sa+"-1-uuid", sa, ns)}
		var leaf *x509.Certificate
		check := func(rs []any) error {
			for _, r := range rs {
				if s, ok := r.(*tlsv3.Secret); ok && s.GetName() == layout.SecretServiceCert {
					block, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
					if block == nil {
						return fmt.Errorf("%s holds no PEM certificate", s.GetName())
					}
					c, err := x509.ParseCertificate(block.Bytes)
					if err != nil {
						return err
					}
					leaf = c
					return nil
				}
			}
			return fmt.Errorf("no %s in %v", layout.SecretServiceCert, names(rs))
		}
		// The edge has the certificate signed on the proxy's first request;
		// it may come in a later response than the roots.
		if c, first := p.fetch(typeSDS); check(first) != nil {
			nextUntil(t, c, "the service certificate of "+sa, check)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != identityOf(ns, sa).String() {
			t.Fatalf("the service certificate of %s is for %v", sa, leaf.URIs)
		}
		return leaf.NotAfter.Sub(leaf.NotBefore)
	}
	const backdate = time.Minute // the CA's NotBefore is a minute before issuance
	edgeFollows := func(lifetime string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(m.Proc(stack.Edge).Output(), "lifetime="+lifetime) {
			if time.Now().After(deadline) {
				t.Fatalf("the edge did not log lifetime=%s within 30s:\n%s", lifetime, m.Proc(stack.Edge).Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if got := lifetimeOf("one"); got != 2*time.Hour+backdate {
		t.Fatalf("with serviceCertValidityDuration 2h: a certificate valid for %s, want 2h (+1m backdate)", got)
	}

	start := time.Now()
	if err := patchMeshConfig(t, mcName, `{"spec":{"certificate":{"serviceCertValidityDuration":"3h"}}}`); err != nil {
		t.Fatal(err)
	}
	edgeFollows("3h0m0s")
	t.Logf("MeshConfig validity edit to the edge: %s (shared machine)", time.Since(start).Round(time.Millisecond))
	if got := lifetimeOf("two"); got != 3*time.Hour+backdate {
		t.Fatalf("after the edit to 3h: the next certificate is valid for %s, want 3h (+1m backdate)", got)
	}

	if err := patchMeshConfig(t, mcName, `{"spec":{"certificate":{"serviceCertValidityDuration":"72h"}}}`); err != nil {
		t.Fatal(err)
	}
	edgeFollows("72h0m0s")
	if got := lifetimeOf("three"); got != 48*time.Hour+backdate {
		t.Fatalf("with 72h over the CA's --max-ttl 48h: a certificate valid for %s, want 48h (+1m backdate)", got)
	}
	if ca := m.Proc(stack.CertAuthority).Output(); !strings.Contains(ca, "sign ttl clamped") || !strings.Contains(ca, "asked_ttl=72h0m0s") || !strings.Contains(ca, "granted_ttl=48h0m0s") {
		t.Fatalf("the CA did not log the clamp with the asked and granted lifetimes:\n%s", ca)
	}
}

// TestMeshConfigCertValidityProxyless: a proxyless gRPC pod's bootstrap
// Secret, written by the injector through the real apiserver's admission,
// holds a service certificate of the MeshConfig's
// serviceCertValidityDuration (plus the CA's backdate), while its xDS
// client certificate keeps the injector's --cert-ttl; after an edit, the
// next pod's service certificate has the new lifetime.
func TestMeshConfigCertValidityProxyless(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	run := uniq()
	ns, meshName, mcName := "certttl-grpc"+run, "certttl-grpc"+run, "certttl-grpc-mesh-config"+run
	namespace(t, "osm-system", nil)
	namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, "bookstore")
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	meshConfig(t, mcName, true)
	if err := patchMeshConfig(t, mcName, `{"spec":{"certificate":{"serviceCertValidityDuration":"2h"}}}`); err != nil {
		t.Fatal(err)
	}
	m := startMesh(t, stack.Options{Name: "certttl-grpc", MeshName: meshName, MeshConfig: mcName}, stack.CertAuthority, stack.Injector)
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), m.WebhookConfigName(), metav1.DeleteOptions{})
		_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), m.ValidatingWebhookConfigName(), metav1.DeleteOptions{})
	})

	// lifetimes creates a proxyless pod and returns the validity of its
	// bootstrap Secret's service and xDS client certificates.
	lifetimes := func(name string) (service, client time.Duration) {
		t.Helper()
		var p *corev1.Pod
		eventually(t, "an injected proxyless pod "+name, 30*time.Second, func() error {
			var err error
			p, err = cs.CoreV1().Pods(ns).Create(ctx, pod(name, map[string]string{layout.NodeMetadataProxyless: layout.ProxylessGRPC}), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				p, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			if p.Labels[layout.LabelProxyUUID] == "" {
				_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
				return errors.New("pod created without injection (webhook not called yet?)")
			}
			return nil
		})
		validity := func(pemBytes []byte) (time.Duration, error) {
			block, _ := pem.Decode(pemBytes)
			if block == nil {
				return 0, errors.New("no PEM certificate")
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return 0, err
			}
			return c.NotAfter.Sub(c.NotBefore), nil
		}
		eventually(t, "the bootstrap secret of "+name+" with both certificates", 30*time.Second, func() error {
			sec, err := cs.CoreV1().Secrets(ns).Get(ctx, "envoy-bootstrap-"+p.Labels[layout.LabelProxyUUID], metav1.GetOptions{})
			if err != nil {
				return err
			}
			if service, err = validity(sec.Data["svc.crt"]); err != nil {
				return fmt.Errorf("svc.crt: %w", err)
			}
			if client, err = validity(sec.Data["tls.crt"]); err != nil {
				return fmt.Errorf("tls.crt: %w", err)
			}
			return nil
		})
		return service, client
	}
	const backdate = time.Minute

	svc, xds := lifetimes("greeter-1")
	if svc != 2*time.Hour+backdate || xds != 24*time.Hour+backdate {
		t.Fatalf("with serviceCertValidityDuration 2h: service certificate %s, xDS client certificate %s; want 2h and the injector's --cert-ttl 24h (+1m backdate)", svc, xds)
	}
	if err := patchMeshConfig(t, mcName, `{"spec":{"certificate":{"serviceCertValidityDuration":"3h"}}}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the injector following the edit", 30*time.Second, func() error {
		if !strings.Contains(m.Proc(stack.Injector).Output(), "lifetime=3h0m0s") {
			return errors.New("no lifetime=3h0m0s in the injector's log")
		}
		return nil
	})
	if svc, _ := lifetimes("greeter-2"); svc != 3*time.Hour+backdate {
		t.Fatalf("after the edit to 3h: the next service certificate is valid for %s, want 3h (+1m backdate)", svc)
	}
}
