package access

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// The chart's names the cluster path reads.
const (
	// CAService and EdgeService are the chart's Services.
	CAService   = "osm-cert-authority"
	EdgeService = "osm-xds-edge"
	// EdgeDebugPort is the name of the edge container's debug API port.
	EdgeDebugPort = "debug"
	// CARootsConfigMap holds the CA's roots when the chart sets them
	// (global.caRoots.pem, the Vault provider).
	CARootsConfigMap = "osm-ca-roots"
)

// PortForward reaches the components through the Kubernetes API: it finds
// the ready pods behind the chart's Services and opens a local port to each
// with client-go's port-forward, as kubectl port-forward does.
type PortForward struct {
	Config    *rest.Config
	Kube      kubernetes.Interface
	Namespace string

	mu    sync.Mutex
	stops []chan struct{}
}

var _ Dialer = (*PortForward)(nil)

// CertAuthority implements Dialer: the first ready pod of the
// cert-authority's Service, on the Service's target port.
func (p *PortForward) CertAuthority(ctx context.Context) (Endpoint, error) {
	svc, pods, err := p.readyPods(ctx, CAService)
	if err != nil {
		return Endpoint{}, err
	}
	if len(svc.Spec.Ports) == 0 {
		return Endpoint{}, fmt.Errorf("Service %s/%s has no port", p.Namespace, CAService)
	}
	pod := pods[0]
	port, err := containerPort(pod, svc.Spec.Ports[0].TargetPort)
	if err != nil {
		return Endpoint{}, err
	}
	addr, err := p.forward(ctx, pod, port)
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Name: pod.Name, Addr: addr, ServerName: CAService + "." + p.Namespace + ".svc"}, nil
}

// Edges implements Dialer: every ready pod of the edge's Service, on its
// container port named debug.
func (p *PortForward) Edges(ctx context.Context) ([]Endpoint, error) {
	_, pods, err := p.readyPods(ctx, EdgeService)
	if err != nil {
		return nil, err
	}
	var out []Endpoint
	for _, pod := range pods {
		port, err := containerPort(pod, intstr.FromString(EdgeDebugPort))
		if err != nil {
			return nil, fmt.Errorf("%w: the edge's debug API is off (chart value xdsEdge.debug.enabled); turn it on with osm upgrade --set xdsEdge.debug.enabled=true", err)
		}
		addr, err := p.forward(ctx, pod, port)
		if err != nil {
			return nil, err
		}
		out = append(out, Endpoint{Name: pod.Name, Addr: addr})
	}
	return out, nil
}

// CARoots implements Dialer: the ConfigMap osm-ca-roots when the chart
// made one, else the caBundle the injector keeps equal to the mesh's trust
// bundle in its MutatingWebhookConfiguration. Neither holds a key.
func (p *PortForward) CARoots(ctx context.Context) ([]byte, error) {
	cm, err := p.Kube.CoreV1().ConfigMaps(p.Namespace).Get(ctx, CARootsConfigMap, metav1.GetOptions{})
	if err == nil && strings.TrimSpace(cm.Data["ca.crt"]) != "" {
		return []byte(cm.Data["ca.crt"]), nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", p.Namespace, CARootsConfigMap, err)
	}
	name := "osm-" + p.Namespace + "-sidecar-injector"
	wh, err := p.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the cert-authority's roots: no ConfigMap %s/%s, and MutatingWebhookConfiguration %s: %w", p.Namespace, CARootsConfigMap, name, err)
	}
	for _, w := range wh.Webhooks {
		if b := bytes.TrimSpace(w.ClientConfig.CABundle); len(b) > 0 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("the cert-authority's roots: MutatingWebhookConfiguration %s has no caBundle yet (is the injector running?)", name)
}

// readyPods returns a Service and its ready pods; the error names the
// Service and says when none is ready.
func (p *PortForward) readyPods(ctx context.Context, service string) (*corev1.Service, []*corev1.Pod, error) {
	svc, err := p.Kube.CoreV1().Services(p.Namespace).Get(ctx, service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("Service %s/%s not found: is the mesh installed in namespace %s (--namespace)?", p.Namespace, service, p.Namespace)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("Service %s/%s: %w", p.Namespace, service, err)
	}
	list, err := p.Kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return nil, nil, fmt.Errorf("pods of Service %s/%s: %w", p.Namespace, service, err)
	}
	var out []*corev1.Pod
	for i := range list.Items {
		if podReady(&list.Items[i]) {
			out = append(out, &list.Items[i])
		}
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("no ready pod behind Service %s/%s (%d pods): check kubectl get pods -n %s", p.Namespace, service, len(list.Items), p.Namespace)
	}
	return svc, out, nil
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// containerPort resolves a Service's target port on a pod.
func containerPort(pod *corev1.Pod, target intstr.IntOrString) (int32, error) {
	if target.Type == intstr.Int {
		return target.IntVal, nil
	}
	for _, c := range pod.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == target.StrVal {
				return port.ContainerPort, nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s/%s has no container port named %s", pod.Namespace, pod.Name, target.StrVal)
}

// forward opens a local port on 127.0.0.1 to the pod's port and returns
// its address; Close ends it.
func (p *PortForward) forward(ctx context.Context, pod *corev1.Pod, port int32) (string, error) {
	transport, upgrader, err := spdy.RoundTripperFor(p.Config)
	if err != nil {
		return "", err
	}
	url := p.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(p.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		if err == nil {
			err = errors.New(strings.TrimSpace(errOut.String()))
		}
		return "", fmt.Errorf("port-forward to pod %s/%s port %d: %w (%s)", p.Namespace, pod.Name, port, err, forwardHint(err, pod, p.Namespace))
	case <-ctx.Done():
		close(stop)
		return "", ctx.Err()
	}
	p.mu.Lock()
	p.stops = append(p.stops, stop)
	p.mu.Unlock()
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return "", fmt.Errorf("port-forward to pod %s/%s: no local port (%v)", p.Namespace, pod.Name, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local), nil
}

// Close implements Dialer: it ends every port-forward.
func (p *PortForward) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.stops {
		close(s)
	}
	p.stops = nil
}

// forwardHint says why a port-forward failed to open: the apiserver
// refused it (RBAC), or could not reach the pod's kubelet, through which
// every port-forward goes (a cluster without kubelets, as a test harness,
// has none: the context file is the way there).
func forwardHint(err error, pod *corev1.Pod, ns string) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "forbidden") || strings.Contains(msg, "Forbidden"):
		return "you need create on pods/portforward in " + ns
	case pod.Spec.NodeName == "":
		return "the pod is bound to no node, so no kubelet can forward to it"
	case strings.Contains(msg, "no preferred addresses") || strings.Contains(msg, "dial tcp") || strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("the apiserver could not reach the kubelet of node %s, through which a port-forward goes: check kubectl get node %s -o wide; a cluster without kubelets (the dev stack, a test harness) needs the context file (--osm-context)",
			pod.Spec.NodeName, pod.Spec.NodeName)
	}
	return "you need create on pods/portforward in " + ns + ", and the pod's kubelet must be reachable from the apiserver"
}
