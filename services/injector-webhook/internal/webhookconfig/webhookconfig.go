// Package webhookconfig owns the injector's webhook configurations. The
// MutatingWebhookConfiguration fails closed, never matches kube-system or
// the control-plane namespace and has no side effects on dry runs; the
// ValidatingWebhookConfiguration of the policy kinds (validating.go)
// ignores failures by default, for the reasons DefaultValidationFailurePolicy
// gives. Both carry the current caBundle of the injector's serving
// certificate, which a Keeper keeps.
package webhookconfig

import (
	"bytes"
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/layout"
)

// WebhookName is the name of the one webhook in the configuration.
const WebhookName = "sidecar-injector.openservicemesh.io"

// Options describe the desired configuration.
type Options struct {
	// Name of the MutatingWebhookConfiguration.
	Name string
	// MeshName selects namespaces labelled openservicemesh.io/monitored-by=MeshName.
	MeshName string
	// ControlPlaneNamespace is never matched (nor is kube-system).
	ControlPlaneNamespace string
	// Service locates the injector: namespace, name, port, path. When
	// URL is set instead, the apiserver calls that URL (tests, dev stack).
	ServiceNamespace, ServiceName string
	ServicePort                   int32
	Path                          string
	URL                           string
	// CABundle verifies the injector's serving certificate.
	CABundle []byte
	// TimeoutSeconds bounds each call; at most 10.
	TimeoutSeconds int32
}

// Desired returns the configuration for o.
func Desired(o Options) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	if o.Name == "" || o.MeshName == "" || o.ControlPlaneNamespace == "" {
		return nil, fmt.Errorf("webhook configuration needs a name, the mesh name and the control-plane namespace")
	}
	if len(o.CABundle) == 0 {
		return nil, fmt.Errorf("webhook configuration %s: empty caBundle", o.Name)
	}
	timeout := o.TimeoutSeconds
	if timeout <= 0 || timeout > 10 {
		timeout = 10
	}
	fail := admissionregistrationv1.Fail
	side := admissionregistrationv1.SideEffectClassNoneOnDryRun
	reinvoke := admissionregistrationv1.NeverReinvocationPolicy
	scope := admissionregistrationv1.NamespacedScope
	path := o.Path
	if path == "" {
		path = "/mutate-pod"
	}
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: o.CABundle}
	if o.URL != "" {
		u := o.URL
		cc.URL = &u
	} else {
		port := o.ServicePort
		cc.Service = &admissionregistrationv1.ServiceReference{Namespace: o.ServiceNamespace, Name: o.ServiceName, Path: &path, Port: &port}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "osm-injector"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         WebhookName,
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: &scope},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: layout.LabelMonitoredBy, Operator: metav1.LabelSelectorOpIn, Values: []string{o.MeshName}},
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", o.ControlPlaneNamespace}},
			}},
			FailurePolicy:           &fail,
			SideEffects:             &side,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &reinvoke,
		}},
	}, nil
}

// Ensure creates the configuration or brings an existing one's webhooks to
// desired, keeping what the apiserver defaulted and the existing labels. It
// reports whether it wrote.
func Ensure(ctx context.Context, cs kubernetes.Interface, desired *admissionregistrationv1.MutatingWebhookConfiguration) (bool, error) {
	api := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := api.Get(ctx, desired.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := api.Create(ctx, desired, metav1.CreateOptions{}); err != nil {
			return false, fmt.Errorf("create mutatingwebhookconfiguration %s: %w", desired.Name, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get mutatingwebhookconfiguration %s: %w", desired.Name, err)
	}
	if upToDate(cur, desired) {
		return false, nil
	}
	// The labels of an existing configuration are left alone: Helm (or
	// another installer) owns them, and a label rewritten here would make
	// its next server-side apply conflict.
	next := cur.DeepCopy()
	next.Webhooks = desired.Webhooks
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update mutatingwebhookconfiguration %s: %w", desired.Name, err)
	}
	return true, nil
}

// upToDate compares the fields the injector owns.
func upToDate(cur, want *admissionregistrationv1.MutatingWebhookConfiguration) bool {
	if len(cur.Webhooks) != 1 || len(want.Webhooks) != 1 {
		return false
	}
	c, w := cur.Webhooks[0], want.Webhooks[0]
	return c.Name == w.Name && bytes.Equal(c.ClientConfig.CABundle, w.ClientConfig.CABundle) &&
		ptrEq(c.ClientConfig.URL, w.ClientConfig.URL) &&
		equality.Semantic.DeepEqual(c.ClientConfig.Service, w.ClientConfig.Service) &&
		equality.Semantic.DeepEqual(c.NamespaceSelector, w.NamespaceSelector) &&
		*c.FailurePolicy == *w.FailurePolicy && *c.SideEffects == *w.SideEffects &&
		*c.TimeoutSeconds == *w.TimeoutSeconds
}

func ptrEq(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
