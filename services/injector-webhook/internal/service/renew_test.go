package service

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
)

// TestBootstrapCertificatesAreRenewed is issue 15, item 1, end to end in
// the service: a real pod's bootstrap certificate, which the CA issues for
// 4 s, is replaced before two thirds of its lifetime for three lifetimes,
// and a root rotation at the CA reaches ca.crt within seconds, with the
// certificate reissued from the new root once the old one leaves.
func TestBootstrapCertificatesAreRenewed(t *testing.T) {
	const ttl, lifetimes = 4 * time.Second, 3
	ca := startFakeCA(t)
	ca.maxTTL.Store(int64(ttl))
	ns := cluster.Namespace(t, "renewed", map[string]string{layout.LabelMonitoredBy: "osm"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The reconciler renews on the replica that holds the Lease in
	// --namespace.
	cp := cluster.Namespace(t, "osm-cp", nil)
	_, res, out := startInjector(ctx, t, ca, "osm-renew-test", apptest.FreeAddr(t), apptest.FreeAddr(t), "--namespace", cp)
	pod := createInjectedPod(ctx, t, ns)
	_, cur := bootstrapSecretOf(ctx, t, pod)

	var fractions []string
	end := cur.NotBefore.Add(lifetimes * ttl)
	for time.Now().Before(end) {
		if time.Now().After(cur.NotAfter) {
			t.Fatalf("certificate expired unrenewed (renewed at %v of the lifetime before)\n%s", fractions, out)
		}
		time.Sleep(50 * time.Millisecond)
		_, leaf := bootstrapSecretOf(ctx, t, pod)
		if leaf.SerialNumber.Cmp(cur.SerialNumber) == 0 {
			continue
		}
		life, at := cur.NotAfter.Sub(cur.NotBefore), time.Since(cur.NotBefore)
		fractions = append(fractions, fmt.Sprintf("%.2f", at.Seconds()/life.Seconds()))
		if at >= life*2/3 {
			t.Fatalf("certificate replaced %s into its %s lifetime, past two thirds", at, life)
		}
		cur = leaf
	}
	t.Logf("%d renewals of %s certificates in %d lifetimes, at %v of their lifetime", len(fractions), ttl, lifetimes, fractions)
	if len(fractions) < 2*lifetimes-1 {
		t.Fatalf("%d renewals in %d lifetimes", len(fractions), lifetimes)
	}

	// A root rotation: both roots, then the new one only. Longer
	// certificates now, so that only the rotation replaces them.
	ca.maxTTL.Store(int64(time.Hour))
	ca.mu.Lock()
	oldRoot := ca.signer
	ca.mu.Unlock()
	newRoot := newRoot(t, "fake-ca-root-2")
	start := time.Now()
	ca.rotate(oldRoot, oldRoot, newRoot)
	both := append(append([]byte(nil), oldRoot.pem...), newRoot.pem...)
	apptest.Eventually(t, "ca.crt with both roots", 10*time.Second, func() error {
		if sec, _ := bootstrapSecretOf(ctx, t, pod); !bytes.Equal(sec.Data["ca.crt"], both) {
			return fmt.Errorf("ca.crt of %d bytes", len(sec.Data["ca.crt"]))
		}
		return nil
	})
	t.Logf("both roots in ca.crt %s after the CA's bundle changed", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	ca.rotate(newRoot, newRoot)
	apptest.Eventually(t, "a certificate from the new root", 10*time.Second, func() error {
		sec, leaf := bootstrapSecretOf(ctx, t, pod)
		if !bytes.Equal(sec.Data["ca.crt"], newRoot.pem) {
			return fmt.Errorf("ca.crt of %d bytes", len(sec.Data["ca.crt"]))
		}
		return leaf.CheckSignatureFrom(newRoot.cert)
	})
	t.Logf("certificate reissued from the new root %s after the old root left the bundle", time.Since(start).Round(time.Millisecond))
	cancel()
	apptest.Stopped(t, res, out)
}
