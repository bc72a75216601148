package chart

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// access is one request a ServiceAccount of the chart may or may not make.
type access struct {
	sa, verb, group, resource, ns, name string
	allowed                             bool
}

// rbacExpectations are requests the installed chart's RBAC must allow and
// the nearby ones it must refuse (the apiserver's own authorizer decides,
// through SubjectAccessReviews).
func rbacExpectations() []access {
	const ns, other = namespace, "bookstore"
	mwc := "osm-" + ns + "-sidecar-injector"
	vwc := "osm-" + ns + "-policy-validator"
	return []access{
		// The compiler, the edge and NATS: nothing.
		{"osm-policy-compiler", "list", "", "pods", other, "", false},
		{"osm-policy-compiler", "list", "config.openservicemesh.io", "meshconfigs", ns, "", false},
		{"osm-xds-edge", "get", "", "secrets", ns, "osm-ca-root", false},
		{"osm-xds-edge", "list", "", "services", other, "", false},
		{"osm-nats", "get", "", "secrets", ns, "osm-nats-tls", false},
		// The operator ServiceAccount (the osm CLI's, through its token):
		// nothing in Kubernetes; its token only gets the CA's operator role.
		{"osm-operator", "list", "", "pods", other, "", false},
		{"osm-operator", "get", "", "secrets", ns, "osm-ca-root", false},
		{"osm-operator", "create", "", "serviceaccounts", ns, "", false},
		// The watcher: informers cluster-wide, events, its own Lease; no Secrets.
		{"osm-smi-watcher", "watch", "", "pods", other, "", true},
		{"osm-smi-watcher", "list", "discovery.k8s.io", "endpointslices", other, "", true},
		{"osm-smi-watcher", "list", "split.smi-spec.io", "trafficsplits", other, "", true},
		{"osm-smi-watcher", "watch", "policy.openservicemesh.io", "retries", other, "", true},
		{"osm-smi-watcher", "watch", "policy.openservicemesh.io", "egresses", other, "", true},
		{"osm-smi-watcher", "watch", "policy.openservicemesh.io", "upstreamtrafficsettings", other, "", true},
		{"osm-smi-watcher", "update", "policy.openservicemesh.io", "upstreamtrafficsettings", other, "", false},
		{"osm-smi-watcher", "list", "policy.openservicemesh.io", "ingressbackends", other, "", true},
		{"osm-smi-watcher", "update", "policy.openservicemesh.io", "ingressbackends", other, "", false},
		{"osm-smi-watcher", "create", "", "events", other, "", true},
		{"osm-smi-watcher", "update", "coordination.k8s.io", "leases", ns, "osm-smi-watcher", true},
		{"osm-smi-watcher", "update", "coordination.k8s.io", "leases", ns, "osm-injector-webhook", false},
		{"osm-smi-watcher", "update", "", "pods", other, "", false},
		{"osm-smi-watcher", "list", "", "secrets", other, "", false},
		{"osm-smi-watcher", "list", "config.openservicemesh.io", "meshconfigs", other, "", false},
		// The CA: TokenReviews, its root Secret by name.
		{"osm-cert-authority", "create", "authentication.k8s.io", "tokenreviews", "", "", true},
		{"osm-cert-authority", "get", "", "secrets", ns, "osm-ca-root", true},
		{"osm-cert-authority", "get", "", "secrets", ns, "osm-nats-tls", false},
		{"osm-cert-authority", "list", "", "secrets", ns, "", false},
		{"osm-cert-authority", "create", "", "secrets", other, "", false},
		// The injector: its own webhook configuration only, bootstrap Secrets.
		{"osm-injector-webhook", "update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", mwc, true},
		{"osm-injector-webhook", "update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "another-webhook", false},
		{"osm-injector-webhook", "create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", false},
		{"osm-injector-webhook", "update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", mwc, false},
		{"osm-injector-webhook", "update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", vwc, true},
		{"osm-injector-webhook", "get", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", vwc, true},
		{"osm-injector-webhook", "create", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "", false},
		{"osm-injector-webhook", "delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", vwc, false},
		{"osm-injector-webhook", "create", "", "secrets", other, "", true},
		{"osm-injector-webhook", "patch", "", "secrets", other, "", true},
		{"osm-injector-webhook", "delete", "", "pods", other, "", false},
		{"osm-injector-webhook", "update", "coordination.k8s.io", "leases", ns, "osm-injector-webhook", true},
		{"osm-injector-webhook", "update", "coordination.k8s.io", "leases", ns, "osm-smi-watcher", false},
	}
}

// checkRBAC asks the apiserver whether each ServiceAccount may make each
// request of rbacExpectations.
func checkRBAC(ctx context.Context, t *testing.T) {
	t.Helper()
	sars := cluster.Clientset().AuthorizationV1().SubjectAccessReviews()
	for _, a := range rbacExpectations() {
		r, err := sars.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + namespace + ":" + a.sa,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.ns, Name: a.name,
			},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("subject access review: %v", err)
		}
		if r.Status.Allowed != a.allowed {
			t.Errorf("%s %s %s/%s %q in %q: allowed %v, want %v (%s)", a.sa, a.verb, a.group, a.resource, a.name, a.ns,
				r.Status.Allowed, a.allowed, r.Status.Reason)
		}
	}
}
