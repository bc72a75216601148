package reconcile

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// roots is the current trust bundle, or nil when none is known.
func (r *Reconciler) roots() []byte {
	if r.o.Roots == nil {
		return nil
	}
	b, err := r.o.Roots()
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// due reads from sec's annotations when its certificate is to be renewed;
// ok is false when they are missing or do not parse.
func due(sec *metav1.PartialObjectMetadata) (time.Time, bool) {
	nb, err1 := time.Parse(time.RFC3339, sec.Annotations[webhook.AnnotationCertNotBefore])
	na, err2 := time.Parse(time.RFC3339, sec.Annotations[webhook.AnnotationCertNotAfter])
	if err1 != nil || err2 != nil || !na.After(nb) {
		return time.Time{}, false
	}
	return webhook.RenewAt(nb, na), true
}

// renew keeps the certificate and roots of sec, the Secret of pod, current
// (step 4 of the package doc). From the cached metadata alone it knows
// when nothing is due, and schedules the next look; otherwise it reads the
// Secret, and its certificate decides.
func (r *Reconciler) renew(ctx context.Context, key string, sec *metav1.PartialObjectMetadata, pod *corev1.Pod) error {
	if r.o.Issuer == nil {
		return nil
	}
	now := r.now()
	roots := r.roots()
	at, ok := due(sec)
	if ok && now.Before(at) && (roots == nil || sec.Annotations[webhook.AnnotationTrust] == webhook.TrustHash(roots)) {
		r.later(key, at.Sub(now))
		return nil
	}
	secrets := r.o.Client.CoreV1().Secrets(sec.Namespace)
	full, err := secrets.Get(ctx, sec.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// The certificates the Secret holds (the xDS client certificate, and a
	// proxyless pod's service certificate) are issued together: all are
	// reissued when one is due, unreadable or no longer verified.
	certs, err := webhook.Certs(full)
	var leaf *x509.Certificate
	reissue, reason := err != nil, "unreadable"
	if err == nil {
		first, _ := webhook.FirstDue(full)
		leaf = first.Leaf
		reissue, reason = !now.Before(webhook.RenewAt(leaf.NotBefore, leaf.NotAfter)), "due"
		for _, c := range certs {
			if !reissue && roots != nil && !verifies(c.ChainPEM, c.Leaf, roots, now) {
				reissue, reason = true, "issuer left the trust bundle"
			}
		}
	}
	action := "trust-updated"
	switch {
	case reissue:
		action = "renewed"
		if err := r.o.Issuer.Certify(ctx, full, pod.Spec.ServiceAccountName); err != nil {
			r.observe(action, err)
			return err
		}
		if roots != nil {
			webhook.SetTrust(full, roots)
		}
		first, err := webhook.FirstDue(full)
		if err != nil {
			r.observe(action, err)
			return err
		}
		leaf = first.Leaf
	case roots != nil && !bytes.Equal(full.Data[bootstrap.FileCA], roots):
		webhook.SetTrust(full, roots)
	default:
		// Up to date; the annotations were missing or stale (an older
		// injector wrote the Secret): set them so that the cache knows.
		action = ""
		before := full.Annotations[webhook.AnnotationCertNotAfter] + full.Annotations[webhook.AnnotationCertNotBefore] +
			full.Annotations[webhook.AnnotationTrust]
		mirror(full, leaf)
		if before == full.Annotations[webhook.AnnotationCertNotAfter]+full.Annotations[webhook.AnnotationCertNotBefore]+
			full.Annotations[webhook.AnnotationTrust] {
			r.later(key, webhook.RenewAt(leaf.NotBefore, leaf.NotAfter).Sub(now))
			return nil
		}
	}
	_, err = secrets.Update(ctx, full, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		return err // changed meanwhile: looked at again
	}
	if action != "" {
		r.observe(action, err)
	}
	if err != nil {
		return fmt.Errorf("update bootstrap secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	if action != "" {
		r.o.Log.WithContext(ctx).WithFields(logrus.Fields{"namespace": sec.Namespace, "name": sec.Name,
			"proxy_uuid": sec.Labels[layout.LabelProxyUUID], "action": action, "reason": reason,
			"not_after": leaf.NotAfter.UTC().Format(time.RFC3339)}).Info("bootstrap certificate renewed")
	}
	r.later(key, webhook.RenewAt(leaf.NotBefore, leaf.NotAfter).Sub(now))
	return nil
}

// mirror sets the annotations of s from its certificate leaf and ca.crt.
func mirror(s *corev1.Secret, leaf *x509.Certificate) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[webhook.AnnotationCertNotBefore] = leaf.NotBefore.UTC().Format(time.RFC3339)
	s.Annotations[webhook.AnnotationCertNotAfter] = leaf.NotAfter.UTC().Format(time.RFC3339)
	s.Annotations[webhook.AnnotationTrust] = webhook.TrustHash(s.Data[bootstrap.FileCA])
}

// verifies reports whether roots verify leaf, with the intermediates of
// chainPEM, at now.
func verifies(chainPEM []byte, leaf *x509.Certificate, roots []byte, now time.Time) bool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return false
	}
	inter := x509.NewCertPool()
	rest := chainPEM
	for first := true; ; first = false {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if first {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// watchRoots enqueues every Secret each time the trust bundle changes,
// until ctx ends.
func (r *Reconciler) watchRoots(ctx context.Context) {
	if r.o.RootsChanged == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.o.RootsChanged:
			for _, obj := range r.secrets.GetStore().List() {
				r.enqueue(obj)
			}
		}
	}
}
