package kube_test

import (
	"context"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/openservicemesh/osm/tests/kube"
)

// TestAuditLogRecordsAServiceAccountsRequests starts a cluster of its own
// with an audit policy for one namespace's ServiceAccounts: a request of
// such a ServiceAccount is in the log with its verb, object and response
// code (403 here: it has no role), and the admin's requests are not. The
// package's shared cluster has no audit log (the default).
func TestAuditLogRecordsAServiceAccountsRequests(t *testing.T) {
	if cluster.AuditLogPath() != "" {
		t.Errorf("the shared cluster has an audit log %s; the default is none", cluster.AuditLogPath())
	}
	if _, err := cluster.AuditEvents(0); err == nil {
		t.Error("AuditEvents on a cluster without an audit log: no error")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	const ns = "audited"
	c, err := kube.StartCluster(ctx, kube.Options{Logf: t.Logf, AuditPolicy: kube.AuditPolicyForGroups("system:serviceaccounts:" + ns)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	if _, err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	from, err := c.AuditOffset()
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(600)
	tr, err := c.Clientset().CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := &rest.Config{Host: c.RESTConfig().Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.RESTConfig().CAData}}
	sa, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets(ns).Get(ctx, "db-password", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("get secret as the default ServiceAccount: %v, want forbidden", err)
	}
	if _, err := c.Clientset().CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "by-admin"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	evs, err := c.AuditEvents(from)
	if err != nil {
		t.Fatal(err)
	}
	var refused bool
	for _, e := range evs {
		if e.User.Username != "system:serviceaccount:"+ns+":default" {
			t.Errorf("audit event of user %s (%s %s): the policy records only namespace %s's ServiceAccounts",
				e.User.Username, e.Verb, e.RequestURI, ns)
			continue
		}
		r := e.ObjectRef
		if e.Stage == "ResponseComplete" && e.Verb == "get" && r != nil && r.Resource == "secrets" && r.Namespace == ns &&
			r.Name == "db-password" && e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
			refused = true
		}
	}
	if !refused {
		t.Errorf("no audit event of the refused get of secret %s/db-password among %d events after offset %d: %+v", ns, len(evs), from, evs)
	}
}
