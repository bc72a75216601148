// Package inject decides whether a pod joins the mesh and builds the JSON
// patch that adds the iptables init container, the Envoy sidecar, the
// bootstrap volume, rewritten health probes and metrics annotations. It is
// pure: the admission handler does the I/O.
package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/iptables"
)

// Annotations only the injector reads or writes; the labels and
// annotations the mesh shares (monitored-by, ignore, sidecar-injection,
// metrics, the proxy UUID) are in libs/layout.
const (
	AnnotationOutboundPorts = "openservicemesh.io/outbound-port-exclusion-list"
	AnnotationInboundPorts  = "openservicemesh.io/inbound-port-exclusion-list"
	AnnotationOutboundExcl  = "openservicemesh.io/outbound-ip-range-exclusion-list"
	AnnotationOutboundIncl  = "openservicemesh.io/outbound-ip-range-inclusion-list"
	AnnotationProbes        = "openservicemesh.io/original-probes"
	AnnotationInjected      = "openservicemesh.io/sidecar-injected"
)

// Names of what the injector adds to a pod.
const (
	InitContainerName = "osm-init"
	SidecarName       = "envoy"
	BootstrapVolume   = "envoy-bootstrap"
	BootstrapMount    = "/etc/envoy"
)

// Sidecar ports.
const (
	PortAdmin     = 15000
	PortOutbound  = 15001
	PortInbound   = 15003
	PortMetrics   = 15010
	PortLiveness  = 15901
	PortReadiness = 15902
	PortStartup   = 15903
	// PortHealthcheck serves the pod's TCP probes, rewritten to HTTP
	// checks of HealthcheckPath naming the app's port in the
	// HeaderOriginalTCPPort header.
	PortHealthcheck = 15904
)

// The HTTP check a TCP probe is rewritten to, as OSM names it.
const (
	HealthcheckPath       = "/osm-healthcheck"
	HeaderOriginalTCPPort = bootstrap.HeaderOriginalTCPPort
)

// Settings are the mesh-wide injection settings, from MeshConfig and flags.
type Settings struct {
	// MeshName is the value of the monitored-by label that puts a namespace
	// in this mesh.
	MeshName string
	// SidecarImage and InitImage are the container images.
	SidecarImage, InitImage string
	// LogLevel is Envoy's log level.
	LogLevel string
	// Resources are the sidecar's resource requests and limits.
	Resources corev1.ResourceRequirements
	// ProxyUID is the user the sidecar runs as.
	ProxyUID int64
	// PrivilegedInit runs the init container privileged (MeshConfig
	// spec.sidecar.enablePrivilegedInitContainer), for CNIs where
	// NET_ADMIN alone cannot program iptables.
	PrivilegedInit bool
	// OutboundPortExclusions, InboundPortExclusions,
	// OutboundIPRangeExclusions and OutboundIPRangeInclusions are the
	// mesh-wide lists; pod annotations add to them.
	OutboundPortExclusions, InboundPortExclusions        []int
	OutboundIPRangeExclusions, OutboundIPRangeInclusions []string
}

// iptablesConfig merges the mesh-wide lists with the pod's annotations.
// The health-check port bypasses the inbound redirection only when
// healthcheck is set (the pod has a TCP probe the sidecar serves), so that
// a pod without one keeps its port 15904 meshed.
func (s Settings) iptablesConfig(pod *corev1.Pod, healthcheck bool) (iptables.Config, error) {
	bypass := []int{PortMetrics, PortLiveness, PortReadiness, PortStartup}
	if healthcheck {
		bypass = append(bypass, PortHealthcheck)
	}
	c := iptables.Config{
		ProxyUID: s.ProxyUID, OutboundPort: PortOutbound, InboundPort: PortInbound,
		BypassInboundPorts:        bypass,
		OutboundPortExclusions:    append([]int(nil), s.OutboundPortExclusions...),
		InboundPortExclusions:     append([]int(nil), s.InboundPortExclusions...),
		OutboundIPRangeExclusions: append([]string(nil), s.OutboundIPRangeExclusions...),
		OutboundIPRangeInclusions: append([]string(nil), s.OutboundIPRangeInclusions...),
	}
	for _, a := range []struct {
		name string
		dst  *[]int
	}{{AnnotationOutboundPorts, &c.OutboundPortExclusions}, {AnnotationInboundPorts, &c.InboundPortExclusions}} {
		ports, err := portList(pod.Annotations[a.name])
		if err != nil {
			return c, fmt.Errorf("annotation %s: %w", a.name, err)
		}
		*a.dst = append(*a.dst, ports...)
	}
	c.OutboundIPRangeExclusions = append(c.OutboundIPRangeExclusions, app.SplitList(pod.Annotations[AnnotationOutboundExcl])...)
	c.OutboundIPRangeInclusions = append(c.OutboundIPRangeInclusions, app.SplitList(pod.Annotations[AnnotationOutboundIncl])...)
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func portList(v string) ([]int, error) {
	var out []int
	for _, f := range app.SplitList(v) {
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// Decision says whether a pod is injected, and why.
type Decision struct {
	Inject bool
	Reason string
}

// Decide applies the injection rules: the namespace must be in this mesh
// (and not ignored), hostNetwork pods are skipped, and the sidecar-injection
// annotation on the pod wins over the one on the namespace.
func Decide(s Settings, ns *corev1.Namespace, pod *corev1.Pod) (Decision, error) {
	if ns.Labels[layout.LabelMonitoredBy] != s.MeshName || s.MeshName == "" {
		return Decision{false, fmt.Sprintf("namespace %s is not monitored by mesh %s", ns.Name, s.MeshName)}, nil
	}
	if v, ok := ns.Labels[layout.LabelIgnore]; ok && v != "false" {
		return Decision{false, fmt.Sprintf("namespace %s is ignored by the mesh", ns.Name)}, nil
	}
	if pod.Spec.HostNetwork {
		return Decision{false, "the pod uses the host network"}, nil
	}
	if v, ok := pod.Annotations[layout.AnnotationSidecarInjection]; ok {
		return annotationDecision("pod", v)
	}
	if v, ok := ns.Annotations[layout.AnnotationSidecarInjection]; ok {
		return annotationDecision("namespace "+ns.Name, v)
	}
	return Decision{true, fmt.Sprintf("namespace %s is in mesh %s", ns.Name, s.MeshName)}, nil
}

func annotationDecision(on, v string) (Decision, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "enabled", "yes", "true":
		return Decision{true, fmt.Sprintf("%s annotation %s=%s", on, layout.AnnotationSidecarInjection, v)}, nil
	case "disabled", "no", "false":
		return Decision{false, fmt.Sprintf("%s annotation %s=%s", on, layout.AnnotationSidecarInjection, v)}, nil
	}
	return Decision{}, fmt.Errorf("%s annotation %s: %q is not enabled or disabled", on, layout.AnnotationSidecarInjection, v)
}
