package access

import (
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// These are narrow unit tests of the cluster path's lookups, on client-go's
// fake: the port-forwards themselves need a kubelet, which the harness
// lacks (cli/osm's TestProxyCommands runs everything after the dialing
// against real servers).

const ns = "osm-system"

func TestCARootsPreferTheConfigMapThenTheWebhookBundle(t *testing.T) {
	wh := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "osm-osm-system-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "w", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("BUNDLE")}}}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: CARootsConfigMap, Namespace: ns}, Data: map[string]string{"ca.crt": "CONFIGMAP"}}
	for _, c := range []struct {
		name string
		objs []runtime.Object
		want string
		err  string
	}{
		{"configmap", []runtime.Object{cm, wh}, "CONFIGMAP", ""},
		{"webhook", []runtime.Object{wh}, "BUNDLE", ""},
		{"neither", nil, "", "no ConfigMap osm-system/osm-ca-roots, and MutatingWebhookConfiguration osm-osm-system-sidecar-injector"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &PortForward{Kube: fake.NewClientset(c.objs...), Namespace: ns}
			got, err := p.CARoots(t.Context())
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("CARoots: %v; want an error with %q", err, c.err)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Fatalf("CARoots = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestEdgesNameWhatIsMissing(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: EdgeService, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "edge"}, Ports: []corev1.ServicePort{{Name: "ads", Port: 15128}}}}
	pod := func(name string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "edge"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "xds-edge", Ports: ports}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
	}
	for _, c := range []struct {
		name string
		objs []runtime.Object
		err  string
	}{
		{"no service", nil, "Service osm-system/osm-xds-edge not found"},
		{"no ready pod", []runtime.Object{svc, pod("edge-a", false)}, "no ready pod behind Service osm-system/osm-xds-edge (1 pods)"},
		{"debug off", []runtime.Object{svc, pod("edge-a", true, corev1.ContainerPort{Name: "ads", ContainerPort: 15128})},
			"pod osm-system/edge-a has no container port named debug: the edge's debug API is off (chart value xdsEdge.debug.enabled)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &PortForward{Kube: fake.NewClientset(c.objs...), Namespace: ns}
			_, err := p.Edges(t.Context())
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("Edges: %v; want an error with %q", err, c.err)
			}
		})
	}
}

func TestTokenErrorsSayWhatToDo(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want []string
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, OperatorServiceAccount, nil),
			[]string{"permission denied", "osm-system/osm-operator", "kubectl create rolebinding osm-operator-token-<you> -n osm-system --role=osm-operator-token --user=<you>"}},
		{"not found", apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts"}, OperatorServiceAccount),
			[]string{"ServiceAccount osm-system/osm-operator not found", "osm upgrade"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "token" {
					return false, nil, nil
				}
				return true, nil, c.err
			})
			_, err := New(cs, ns, &ContextFile{}).token(t.Context())
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("token: %v; want an error with %q", err, w)
				}
			}
		})
	}
}
