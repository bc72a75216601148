package inject

import (
	"fmt"
	"path"

	corev1 "k8s.io/api/core/v1"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
)

// A proxyless gRPC pod (annotation AnnotationProxyless set to
// layout.ProxylessGRPC) gets no sidecar and no iptables: its gRPC library
// is its own xDS client. It gets the Secret volume ProxylessVolume,
// mounted read-only at ProxylessMount in every container, holding gRPC's
// xDS bootstrap and the certificate files, and the environment
// bootstrap.EnvGRPCBootstrap (and bootstrap.EnvGRPCSPIFFE) in every
// container.
const (
	// AnnotationProxyless selects the proxyless flavour of a pod; it is
	// the node metadata key the edge reads.
	AnnotationProxyless = layout.NodeMetadataProxyless
	ProxylessVolume     = "osm-grpc-bootstrap"
	ProxylessMount      = "/etc/osm/grpc"
)

// Proxyless reports whether pod asks for the proxyless gRPC flavour; an
// annotation value other than layout.ProxylessGRPC is an error naming the
// annotation.
func Proxyless(pod *corev1.Pod) (bool, error) {
	v, ok := pod.Annotations[AnnotationProxyless]
	if !ok {
		return false, nil
	}
	if v != layout.ProxylessGRPC {
		return false, fmt.Errorf("annotation %s: %q is not a proxyless flavour; the only one is %q (remove the annotation for an Envoy sidecar)",
			AnnotationProxyless, v, layout.ProxylessGRPC)
	}
	return true, nil
}

// ProxylessEnv is the environment every container of a proxyless pod
// gets, in this order.
func ProxylessEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: bootstrap.EnvGRPCBootstrap, Value: path.Join(ProxylessMount, bootstrap.FileBootstrap)},
		{Name: bootstrap.EnvGRPCSPIFFE, Value: "true"},
	}
}

// BuildProxyless returns the patch that makes req.Pod a proxyless gRPC
// pod: the Secret volume, its mount and the environment in every
// container (a variable the container already sets is replaced), the
// proxy UUID label and the injected annotation. Nothing is added when the
// pod already has the volume.
func BuildProxyless(req Request) (Result, error) {
	pod := req.Pod
	if Injected(pod) {
		return Result{}, nil
	}
	if req.ProxyUUID == "" {
		return Result{}, fmt.Errorf("no proxy UUID")
	}
	res := Result{BootstrapSecret: BootstrapSecretName(req.ProxyUUID)}
	var ops []Op
	mount := corev1.VolumeMount{Name: ProxylessVolume, MountPath: ProxylessMount, ReadOnly: true}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) == ProxylessMount {
				return Result{}, fmt.Errorf("container %s volumeMounts: %s is where the proxyless gRPC bootstrap is mounted", c.Name, ProxylessMount)
			}
		}
		base := fmt.Sprintf("/spec/containers/%d", i)
		ops = appendToList(ops, base+"/volumeMounts", len(c.VolumeMounts) == 0, mount)
		env := len(c.Env) == 0
		for _, e := range ProxylessEnv() {
			if j := envIndex(c.Env, e.Name); j >= 0 {
				ops = append(ops, Op{"replace", fmt.Sprintf("%s/env/%d", base, j), e})
				continue
			}
			ops = appendToList(ops, base+"/env", env, e)
			env = false
		}
	}
	ops = appendToList(ops, "/spec/volumes", len(pod.Spec.Volumes) == 0, corev1.Volume{
		Name:         ProxylessVolume,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: res.BootstrapSecret}},
	})
	ops = appendToMap(ops, "/metadata/labels", pod.Labels, map[string]string{layout.LabelProxyUUID: req.ProxyUUID})
	ops = appendToMap(ops, "/metadata/annotations", pod.Annotations, map[string]string{AnnotationInjected: "true"})
	res.Ops = ops
	return res, nil
}

func envIndex(env []corev1.EnvVar, name string) int {
	for i, e := range env {
		if e.Name == name {
			return i
		}
	}
	return -1
}
