// Package normalize turns Kubernetes, SMI and OSM objects into the
// osm/mesh/v1 messages the smi-watcher publishes into KV mesh-observed, and
// names the key each one goes under. Every function is pure: the same object
// gives the same message, and fields the mesh does not use (status
// timestamps, managed fields, resourceVersion, unrelated labels) never reach
// the message, so an irrelevant change serialises to identical bytes and the
// watcher writes nothing.
//
// Values are copied as the user wrote them. Judging them (an unknown rule
// kind, a negative weight) is the policy-compiler's job; only values that
// must be parsed into a typed field and fail to parse are moved into an
// InvalidField so nothing is lost.
package normalize

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/smi"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// osmPrefix is the prefix of the labels and annotations kept verbatim.
const osmPrefix = "openservicemesh.io/"

// InMesh reports whether a Namespace belongs to the mesh meshName: it is
// monitored by that mesh and not ignored. Only objects in such namespaces
// are published.
func InMesh(ns *corev1.Namespace, meshName string) bool {
	return ns != nil && ns.Labels[layout.LabelMonitoredBy] == meshName && !ignored(ns)
}

// Monitored reports whether a Namespace is monitored by meshName, ignored or
// not. Such a Namespace is itself published (with ignored set), so consumers
// see why its objects are absent.
func Monitored(ns *corev1.Namespace, meshName string) bool {
	return ns != nil && meshName != "" && ns.Labels[layout.LabelMonitoredBy] == meshName
}

func ignored(ns *corev1.Namespace) bool { return ns.Labels[layout.LabelIgnore] == "true" }

// Namespace normalises a Namespace.
func Namespace(ns *corev1.Namespace) *meshv1.Namespace {
	out := &meshv1.Namespace{
		Meta:           smi.Meta(ns),
		MonitoredBy:    ns.Labels[layout.LabelMonitoredBy],
		Ignored:        ignored(ns),
		MetricsEnabled: ns.Annotations[layout.AnnotationMetrics] == "enabled",
		OsmAnnotations: osmEntries(ns.Labels, ns.Annotations),
	}
	inj, bad := sidecarInjection(ns.Annotations)
	out.SidecarInjection = inj
	if bad != nil {
		out.InvalidFields = append(out.InvalidFields, bad)
	}
	return out
}

// sidecarInjection parses the sidecar-injection annotation.
func sidecarInjection(ann map[string]string) (meshv1.SidecarInjection, *meshv1.InvalidField) {
	v, ok := ann[layout.AnnotationSidecarInjection]
	if !ok {
		return meshv1.SidecarInjection_SIDECAR_INJECTION_UNSPECIFIED, nil
	}
	switch strings.ToLower(v) {
	case "enabled", "yes", "true":
		return meshv1.SidecarInjection_SIDECAR_INJECTION_ENABLED, nil
	case "disabled", "no", "false":
		return meshv1.SidecarInjection_SIDECAR_INJECTION_DISABLED, nil
	}
	return meshv1.SidecarInjection_SIDECAR_INJECTION_INVALID, &meshv1.InvalidField{
		FieldPath: "metadata.annotations[" + layout.AnnotationSidecarInjection + "]",
		Value:     v,
		Message:   `must be one of "enabled", "yes", "true", "disabled", "no" or "false"`,
	}
}

// osmEntries returns the entries of the maps whose key starts with
// "openservicemesh.io/"; later maps win on a clash. Nil when there are none.
func osmEntries(maps ...map[string]string) map[string]string {
	var out map[string]string
	for _, m := range maps {
		for k, v := range m {
			if !strings.HasPrefix(k, osmPrefix) {
				continue
			}
			if out == nil {
				out = make(map[string]string)
			}
			out[k] = v
		}
	}
	return out
}

// Service normalises a Service.
func Service(svc *corev1.Service) *meshv1.Service {
	out := &meshv1.Service{
		Meta:         smi.Meta(svc),
		Selector:     copyMap(svc.Spec.Selector),
		Type:         string(svc.Spec.Type),
		ExternalName: svc.Spec.ExternalName,
		// openservicemesh.io/service-accounts, for selectorless Services.
		OsmAnnotations: osmEntries(svc.Annotations),
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		out.Headless = true
	} else {
		out.ClusterIps = copyStrings(svc.Spec.ClusterIPs)
		if len(out.ClusterIps) == 0 && svc.Spec.ClusterIP != "" {
			out.ClusterIps = []string{svc.Spec.ClusterIP}
		}
	}
	for _, p := range svc.Spec.Ports {
		sp := &meshv1.ServicePort{
			Name:        p.Name,
			Port:        p.Port,
			Protocol:    string(p.Protocol),
			AppProtocol: deref(p.AppProtocol),
		}
		switch {
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			sp.TargetPort = &meshv1.ServicePort_TargetPortName{TargetPortName: p.TargetPort.StrVal}
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0:
			sp.TargetPort = &meshv1.ServicePort_TargetPortNumber{TargetPortNumber: p.TargetPort.IntVal}
		}
		out.Ports = append(out.Ports, sp)
	}
	return out
}

// EndpointSlice normalises an EndpointSlice, without its generation. It
// returns false for a slice
// without the kubernetes.io/service-name label: it belongs to no Service
// and is not published.
func EndpointSlice(eps *discoveryv1.EndpointSlice) (*meshv1.EndpointSlice, bool) {
	svc, ok := eps.Labels[discoveryv1.LabelServiceName]
	if !ok || svc == "" {
		return nil, false
	}
	meta := smi.Meta(eps)
	// The apiserver bumps an EndpointSlice's generation on every write,
	// including the controller's refresh of its last-change-trigger-time
	// annotation after any pod update; it says nothing about the endpoints.
	meta.Generation = 0
	out := &meshv1.EndpointSlice{
		Meta:        meta,
		Service:     &meshv1.NamespacedName{Namespace: eps.Namespace, Name: svc},
		AddressType: addressType(eps.AddressType),
	}
	for _, p := range eps.Ports {
		out.Ports = append(out.Ports, &meshv1.EndpointPort{
			Name:        deref(p.Name),
			Port:        p.Port,
			Protocol:    string(derefProto(p.Protocol)),
			AppProtocol: deref(p.AppProtocol),
		})
	}
	for _, e := range eps.Endpoints {
		ready := e.Conditions.Ready == nil || *e.Conditions.Ready
		serving := ready
		if e.Conditions.Serving != nil {
			serving = *e.Conditions.Serving
		}
		ep := &meshv1.Endpoint{
			Addresses: copyStrings(e.Addresses),
			Conditions: &meshv1.EndpointConditions{
				Ready:       ready,
				Serving:     serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			},
			NodeName: deref(e.NodeName),
			Zone:     deref(e.Zone),
			Hostname: deref(e.Hostname),
		}
		if r := e.TargetRef; r != nil {
			ep.TargetRef = &meshv1.ObjectRef{
				ApiVersion: r.APIVersion,
				Kind:       r.Kind,
				Namespace:  r.Namespace,
				Name:       r.Name,
				Uid:        string(r.UID),
			}
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out, true
}

// addressTypes maps EndpointSlice address types to the contract's.
var addressTypes = map[discoveryv1.AddressType]meshv1.AddressType{
	discoveryv1.AddressTypeIPv4: meshv1.AddressType_ADDRESS_TYPE_IPV4,
	discoveryv1.AddressTypeIPv6: meshv1.AddressType_ADDRESS_TYPE_IPV6,
	discoveryv1.AddressTypeFQDN: meshv1.AddressType_ADDRESS_TYPE_FQDN,
}

// addressType is the contract's address type; UNSPECIFIED for an unknown one.
func addressType(t discoveryv1.AddressType) meshv1.AddressType { return addressTypes[t] }

// Pod normalises a Pod.
func Pod(pod *corev1.Pod) *meshv1.Pod {
	inj, _ := sidecarInjection(pod.Annotations) // the raw value stays in osm_annotations
	out := &meshv1.Pod{
		Meta:             smi.Meta(pod),
		Labels:           copyMap(pod.Labels),
		ServiceAccount:   pod.Spec.ServiceAccountName,
		ProxyUuid:        pod.Labels[layout.LabelProxyUUID],
		NodeName:         pod.Spec.NodeName,
		SidecarInjection: inj,
		OsmAnnotations:   osmEntries(pod.Annotations),
		Phase:            podPhase(pod.Status.Phase),
		Terminating:      pod.DeletionTimestamp != nil,
	}
	for _, ip := range pod.Status.PodIPs {
		out.PodIps = append(out.PodIps, ip.IP)
	}
	if len(out.PodIps) == 0 && pod.Status.PodIP != "" {
		out.PodIps = []string{pod.Status.PodIP}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Ready = c.Status == corev1.ConditionTrue
		}
	}
	return out
}

// podPhases maps Pod phases to the contract's.
var podPhases = map[corev1.PodPhase]meshv1.PodPhase{
	corev1.PodPending:   meshv1.PodPhase_POD_PHASE_PENDING,
	corev1.PodRunning:   meshv1.PodPhase_POD_PHASE_RUNNING,
	corev1.PodSucceeded: meshv1.PodPhase_POD_PHASE_SUCCEEDED,
	corev1.PodFailed:    meshv1.PodPhase_POD_PHASE_FAILED,
	corev1.PodUnknown:   meshv1.PodPhase_POD_PHASE_UNKNOWN,
}

// podPhase is the contract's phase; UNSPECIFIED for an unknown one.
func podPhase(p corev1.PodPhase) meshv1.PodPhase { return podPhases[p] }

// ServiceAccount normalises a ServiceAccount.
func ServiceAccount(sa *corev1.ServiceAccount) *meshv1.ServiceAccount {
	return &meshv1.ServiceAccount{Meta: smi.Meta(sa)}
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefProto(p *corev1.Protocol) corev1.Protocol {
	if p == nil {
		return ""
	}
	return *p
}
