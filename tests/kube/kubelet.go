package kube

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Well-known node labels set by the stand-in.
const (
	// LabelZone is the node label that gives endpoints their zone.
	LabelZone = "topology.kubernetes.io/zone"
	// LabelHostname is the node's hostname label.
	LabelHostname = "kubernetes.io/hostname"
)

// Kubelet plays the parts of the kubelet and the scheduler that the
// control plane needs to see a pod as running: a Node object, the pod's
// binding to it and a Running, Ready pod status with an IP. No container
// runs. The endpointslice controller skips pods whose Node does not exist,
// so every pod that should appear in an EndpointSlice goes through a
// Kubelet.
type Kubelet struct {
	c    *Cluster
	node string
	zone string
}

// Kubelet returns a stand-in kubelet for the node nodeName in zone (which
// may be empty). The Node is created on first use.
func (c *Cluster) Kubelet(nodeName, zone string) *Kubelet {
	return &Kubelet{c: c, node: nodeName, zone: zone}
}

// NodeName returns the name of the stand-in's Node.
func (k *Kubelet) NodeName() string { return k.node }

// Register creates the Node, labelled with its hostname and zone and with a
// Ready condition, if it does not exist yet.
func (k *Kubelet) Register(ctx context.Context) (*corev1.Node, error) {
	nodes := k.c.clientset.CoreV1().Nodes()
	if n, err := nodes.Get(ctx, k.node, metav1.GetOptions{}); err == nil {
		return n, nil
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get node %s: %w", k.node, err)
	}
	labels := map[string]string{LabelHostname: k.node}
	if k.zone != "" {
		labels[LabelZone] = k.zone
	}
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.node, Labels: labels}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // another stand-in for the same node won
		return nodes.Get(ctx, k.node, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", k.node, err)
	}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{
		Type:               corev1.NodeReady,
		Status:             corev1.ConditionTrue,
		Reason:             "KubeletReady",
		Message:            "kubelet stand-in",
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
	}}
	n, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update node %s status: %w", k.node, err)
	}
	return n, nil
}

// Bind assigns the pod to this node through the pods/binding subresource,
// as the scheduler does. A pod already bound to this node is left alone.
func (k *Kubelet) Bind(ctx context.Context, namespace, name string) error {
	pod, err := k.c.clientset.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	switch pod.Spec.NodeName {
	case k.node:
		return nil
	case "":
	default:
		return fmt.Errorf("pod %s/%s is bound to node %s, not %s", namespace, name, pod.Spec.NodeName, k.node)
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.node},
	}
	if err := k.c.clientset.CoreV1().Pods(namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bind pod %s/%s to %s: %w", namespace, name, k.node, err)
	}
	return nil
}

// MakeReady registers the node, binds the pod to it and reports the pod
// Running and Ready with the given IP, with every container running and
// every init container completed. It returns the updated pod.
func (k *Kubelet) MakeReady(ctx context.Context, pod *corev1.Pod, ip string) (*corev1.Pod, error) {
	return k.setStatus(ctx, pod.Namespace, pod.Name, ip, true)
}

// MakeNotReady keeps the pod Running with the given IP but reports its
// containers as not ready, as after a failing readiness probe.
func (k *Kubelet) MakeNotReady(ctx context.Context, pod *corev1.Pod, ip string) (*corev1.Pod, error) {
	return k.setStatus(ctx, pod.Namespace, pod.Name, ip, false)
}

func (k *Kubelet) setStatus(ctx context.Context, namespace, name, ip string, ready bool) (*corev1.Pod, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s ip: %w", namespace, name, err)
	}
	if _, err := k.Register(ctx); err != nil {
		return nil, err
	}
	if err := k.Bind(ctx, namespace, name); err != nil {
		return nil, err
	}
	pods := k.c.clientset.CoreV1().Pods(namespace)
	var updated *corev1.Pod
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status = runningStatus(pod, addr.String(), ready)
		updated, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update pod %s/%s status: %w", namespace, name, err)
	}
	return updated, nil
}

// runningStatus is the status a kubelet reports for a started pod.
func runningStatus(pod *corev1.Pod, ip string, ready bool) corev1.PodStatus {
	old := pod.Status
	now := metav1.Now()
	started := now
	if old.StartTime != nil {
		started = *old.StartTime
	}
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	cond := func(t corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == s {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		return c
	}
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &started,
		QOSClass:  old.QOSClass,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers, corev1.ConditionTrue),
			cond(corev1.PodInitialized, corev1.ConditionTrue),
			cond(corev1.PodScheduled, corev1.ConditionTrue),
			cond(corev1.ContainersReady, readyStatus),
			cond(corev1.PodReady, readyStatus),
		},
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: containerID(pod, c.Name),
			Ready:       true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: started,
				ContainerID: containerID(pod, c.Name),
			}},
		})
	}
	for _, c := range pod.Spec.Containers {
		isStarted := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: containerID(pod, c.Name),
			Ready:       ready,
			Started:     &isStarted,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
	return st
}

func containerID(pod *corev1.Pod, container string) string {
	return fmt.Sprintf("kubebox://%s/%s/%s", pod.Namespace, pod.Name, container)
}

// PodStatus is the status MakeReady (ready) or MakeNotReady reports for
// pod with ip, for a harness that writes it itself, with a client of its
// own, for thousands of pods already bound to a registered stand-in's
// Node (created with spec.nodeName): one status update per pod instead of
// MakeReady's reads and binding.
func PodStatus(pod *corev1.Pod, ip string, ready bool) corev1.PodStatus {
	return runningStatus(pod, ip, ready)
}
