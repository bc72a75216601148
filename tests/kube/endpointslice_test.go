package kube_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openservicemesh/osm/tests/kube"
)

// readyEndpoint is what the test expects the EndpointSlice controller to
// publish for each pod.
type readyEndpoint struct {
	pod, node, zone string
}

func TestEndpointSliceListsReadyPods(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	ns := cluster.Namespace(t, "eps", nil)

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "bookstore"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kubelet := cluster.Kubelet("node-eps-a", "zone-a")
	want := map[string]readyEndpoint{}
	for i := range 3 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("bookstore-%d", i),
				Namespace: ns,
				Labels:    map[string]string{"app": "bookstore"},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name:  "bookstore",
				Image: "example.com/bookstore:v1",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			}}},
		}
		pod, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := fmt.Sprintf("10.244.1.%d", 10+i)
		got, err := kubelet.MakeReady(ctx, pod, ip)
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.NodeName != kubelet.NodeName() || got.Status.PodIP != ip || got.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s after MakeReady: node=%q ip=%q phase=%q", pod.Name, got.Spec.NodeName, got.Status.PodIP, got.Status.Phase)
		}
		want[ip] = readyEndpoint{pod: pod.Name, node: kubelet.NodeName(), zone: "zone-a"}
	}

	var got map[string]readyEndpoint
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = readyEndpoints(ctx, ns, svc.Name)
		return maps.Equal(got, want), err
	})
	if err != nil {
		t.Fatalf("EndpointSlices of %s/%s: got ready endpoints %v, want %v: %v", ns, svc.Name, got, want, err)
	}

	// The slice must carry the Service's target port too.
	sliceList, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sliceList.Items {
		if len(s.Endpoints) == 0 {
			continue
		}
		if len(s.Ports) != 1 || s.Ports[0].Port == nil || *s.Ports[0].Port != 8080 {
			t.Errorf("EndpointSlice %s ports = %+v, want one port 8080", s.Name, s.Ports)
		}
	}

	// A pod that stops being ready stays in the slice, marked not ready.
	pod0, err := cs.CoreV1().Pods(ns).Get(ctx, "bookstore-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubelet.MakeNotReady(ctx, pod0, pod0.Status.PodIP); err != nil {
		t.Fatal(err)
	}
	delete(want, pod0.Status.PodIP)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = readyEndpoints(ctx, ns, svc.Name)
		return maps.Equal(got, want), err
	})
	if err != nil {
		t.Fatalf("after MakeNotReady: got ready endpoints %v, want %v: %v", got, want, err)
	}
}

// readyEndpoints collects the ready endpoints of all EndpointSlices of a
// Service, keyed by address.
func readyEndpoints(ctx context.Context, ns, service string) (map[string]readyEndpoint, error) {
	list, err := cluster.Clientset().DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + service,
	})
	if err != nil {
		return nil, err
	}
	got := map[string]readyEndpoint{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || !*ep.Conditions.Ready {
				continue
			}
			var e readyEndpoint
			if ep.TargetRef != nil {
				e.pod = ep.TargetRef.Name
			}
			if ep.NodeName != nil {
				e.node = *ep.NodeName
			}
			if ep.Zone != nil {
				e.zone = *ep.Zone
			}
			for _, a := range ep.Addresses {
				got[a] = e
			}
		}
	}
	return got, nil
}

// The stand-in's Node carries the zone label that the endpoints take.
func TestKubeletRegistersNodeWithZone(t *testing.T) {
	node, err := cluster.Kubelet("node-zone-b", "zone-b").Register(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Labels[kube.LabelZone]; got != "zone-b" {
		t.Errorf("node zone label = %q, want zone-b", got)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		t.Errorf("node conditions = %+v, want Ready=True", node.Status.Conditions)
	}
}
