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
	"github.com/openservicemesh/osm/services/injector-webhook/internal/validate"
)

// Names of the two webhooks of the ValidatingWebhookConfiguration.
const (
	// PolicyWebhookName validates the policy kinds in the mesh's namespaces.
	PolicyWebhookName = "policy-validator.openservicemesh.io"
	// MeshConfigWebhookName validates MeshConfigs in the control-plane
	// namespace.
	MeshConfigWebhookName = "meshconfig-validator.openservicemesh.io"
)

// DefaultValidationFailurePolicy is Ignore: a policy the webhook could not
// judge (the injector down or unreachable) is admitted, and the
// policy-compiler, which checks every object again, rejects it with a
// PolicyStatus and an Event and keeps serving the last good version. Fail
// would block every policy and MeshConfig edit, fixes and the chart's own
// MeshConfig included, while the injector is away.
const DefaultValidationFailurePolicy = admissionregistrationv1.Ignore

// ValidatingOptions describe the desired ValidatingWebhookConfiguration.
type ValidatingOptions struct {
	// Name of the ValidatingWebhookConfiguration.
	Name string
	// MeshName selects the namespaces labelled
	// openservicemesh.io/monitored-by=MeshName for the policy kinds.
	MeshName string
	// ControlPlaneNamespace is where the MeshConfig kinds are validated.
	ControlPlaneNamespace string
	// Service locates the injector: namespace, name, port, path. When
	// URL is set instead, the apiserver calls that URL.
	ServiceNamespace, ServiceName string
	ServicePort                   int32
	Path                          string
	URL                           string
	// CABundle verifies the injector's serving certificate.
	CABundle []byte
	// FailurePolicy is Ignore (the default) or Fail.
	FailurePolicy admissionregistrationv1.FailurePolicyType
	// TimeoutSeconds bounds each call; default 5, at most 10.
	TimeoutSeconds int32
	// Kinds are the validated kinds; nil means validate.Kinds().
	Kinds []validate.Kind
}

// DesiredValidating returns the configuration for o: one webhook for the
// policy kinds in the mesh's namespaces, one for MeshConfig in the control
// plane's, each with a rule per kind (create and update).
func DesiredValidating(o ValidatingOptions) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	if o.Name == "" || o.MeshName == "" || o.ControlPlaneNamespace == "" {
		return nil, fmt.Errorf("validating webhook configuration needs a name, the mesh name and the control-plane namespace")
	}
	if len(o.CABundle) == 0 {
		return nil, fmt.Errorf("validating webhook configuration %s: empty caBundle", o.Name)
	}
	fail := o.FailurePolicy
	switch fail {
	case "":
		fail = DefaultValidationFailurePolicy
	case admissionregistrationv1.Ignore, admissionregistrationv1.Fail:
	default:
		return nil, fmt.Errorf("validating webhook configuration %s: failure policy %q is not Ignore or Fail", o.Name, fail)
	}
	timeout := o.TimeoutSeconds
	if timeout <= 0 {
		timeout = 5
	}
	timeout = min(timeout, 10)
	kinds := o.Kinds
	if kinds == nil {
		kinds = validate.Kinds()
	}
	path := o.Path
	if path == "" {
		path = "/validate-policy"
	}
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: o.CABundle}
	if o.URL != "" {
		u := o.URL
		cc.URL = &u
	} else {
		port := o.ServicePort
		cc.Service = &admissionregistrationv1.ServiceReference{Namespace: o.ServiceNamespace, Name: o.ServiceName, Path: &path, Port: &port}
	}
	side := admissionregistrationv1.SideEffectClassNone
	scope := admissionregistrationv1.NamespacedScope
	rules := map[validate.Scope][]admissionregistrationv1.RuleWithOperations{}
	for _, k := range kinds {
		rules[k.Scope] = append(rules[k.Scope], admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule: admissionregistrationv1.Rule{APIGroups: []string{k.Resource.Group}, APIVersions: []string{k.Resource.Version},
				Resources: []string{k.Resource.Resource}, Scope: &scope},
		})
	}
	webhook := func(name string, r []admissionregistrationv1.RuleWithOperations, sel *metav1.LabelSelector) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{Name: name, ClientConfig: *cc.DeepCopy(), Rules: r, NamespaceSelector: sel,
			FailurePolicy: &fail, SideEffects: &side, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"}}
	}
	var hooks []admissionregistrationv1.ValidatingWebhook
	if r := rules[validate.MeshNamespaces]; len(r) > 0 {
		hooks = append(hooks, webhook(PolicyWebhookName, r, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: layout.LabelMonitoredBy, Operator: metav1.LabelSelectorOpIn, Values: []string{o.MeshName}},
		}}))
	}
	if r := rules[validate.ControlPlaneNamespace]; len(r) > 0 {
		hooks = append(hooks, webhook(MeshConfigWebhookName, r, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{o.ControlPlaneNamespace}},
		}}))
	}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "osm-injector"}},
		Webhooks:   hooks,
	}, nil
}

// EnsureValidating creates the configuration or brings an existing one's
// webhooks to desired, keeping the existing labels (an installer's). It
// reports whether it wrote.
func EnsureValidating(ctx context.Context, cs kubernetes.Interface, desired *admissionregistrationv1.ValidatingWebhookConfiguration) (bool, error) {
	api := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cur, err := api.Get(ctx, desired.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := api.Create(ctx, desired, metav1.CreateOptions{}); err != nil {
			return false, fmt.Errorf("create validatingwebhookconfiguration %s: %w", desired.Name, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get validatingwebhookconfiguration %s: %w", desired.Name, err)
	}
	if validatingUpToDate(cur, desired) {
		return false, nil
	}
	next := cur.DeepCopy()
	next.Webhooks = desired.Webhooks
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("update validatingwebhookconfiguration %s: %w", desired.Name, err)
	}
	return true, nil
}

// validatingUpToDate compares the fields the injector owns, webhook by
// webhook, rules included (a release that validates a new kind adds one).
func validatingUpToDate(cur, want *admissionregistrationv1.ValidatingWebhookConfiguration) bool {
	if len(cur.Webhooks) != len(want.Webhooks) {
		return false
	}
	for i := range want.Webhooks {
		c, w := cur.Webhooks[i], want.Webhooks[i]
		if c.Name != w.Name || !bytes.Equal(c.ClientConfig.CABundle, w.ClientConfig.CABundle) ||
			!ptrEq(c.ClientConfig.URL, w.ClientConfig.URL) || !equality.Semantic.DeepEqual(c.ClientConfig.Service, w.ClientConfig.Service) ||
			!equality.Semantic.DeepEqual(c.NamespaceSelector, w.NamespaceSelector) || !equality.Semantic.DeepEqual(c.Rules, w.Rules) ||
			c.FailurePolicy == nil || *c.FailurePolicy != *w.FailurePolicy || c.SideEffects == nil || *c.SideEffects != *w.SideEffects ||
			c.TimeoutSeconds == nil || *c.TimeoutSeconds != *w.TimeoutSeconds {
			return false
		}
	}
	return true
}
