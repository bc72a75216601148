package layout

import (
	"strings"

	"github.com/openservicemesh/osm/libs/bus"
)

// Labels and annotations of Kubernetes objects that more than one component
// reads or writes.
const (
	// LabelMonitoredBy on a Namespace names the mesh that monitors it: the
	// namespace is meshed when the value equals the mesh name.
	LabelMonitoredBy = "openservicemesh.io/monitored-by"
	// LabelIgnore set to "true" on a Namespace makes the mesh leave it alone.
	LabelIgnore = "openservicemesh.io/ignore"
	// AnnotationSidecarInjection ("enabled" or "disabled") on a Namespace or
	// Pod turns sidecar injection on or off.
	AnnotationSidecarInjection = "openservicemesh.io/sidecar-injection"
	// AnnotationMetrics set to "enabled" on a Namespace turns on scraping of
	// its sidecars.
	AnnotationMetrics = "openservicemesh.io/metrics"
	// AnnotationServiceAccounts on a Service without a selector declares the
	// identities behind its hand-written EndpointSlices: a comma-separated
	// list of namespace/serviceaccount. The mesh refuses such a Service
	// without it: no certificate is accepted for it.
	AnnotationServiceAccounts = "openservicemesh.io/service-accounts"
	// LabelProxyUUID on a Pod is the UUID of its sidecar, set by the injector.
	LabelProxyUUID = "osm-proxy-uuid"
)

// Status subjects (core NATS). A policy's verdicts go to
// PolicyStatusSubject, a proxy's connect, ACK and NACK reports to
// ProxyStatusSubject; subscribers use the ...All wildcards.
const (
	// PolicyStatusAll matches every PolicyStatus subject.
	PolicyStatusAll = bus.SubjectPolicyStatus + ".>"
	// ProxyStatusAll matches every ProxyStatus subject.
	ProxyStatusAll = bus.SubjectProxyStatus + ".>"
)

// PolicyStatusSubject is the subject of the verdicts on the policy object
// of kind (its display name, "TrafficTarget") namespace/name:
// mesh.status.policy.<kind key>.<ns>.<name>.
func PolicyStatusSubject(kind, namespace, name string) string {
	return bus.SubjectPolicyStatus + "." + bus.Key(KindKey(kind), namespace, name)
}

// ProxyStatusSubject is the subject of the status reports of proxy proxyID
// served by the edge replica edgeID: mesh.status.proxy.<edge>.<proxy>.
func ProxyStatusSubject(edgeID, proxyID string) string {
	return bus.SubjectProxyStatus + "." + bus.EscapeToken(edgeID) + "." + bus.EscapeToken(proxyID)
}

// kindDisplay maps each kind key to the Kubernetes kind name users see, in
// PolicyStatus.object.kind, in sync marker counts and in Events.
var kindDisplay = map[string]string{
	KindNamespace:      "Namespace",
	KindService:        "Service",
	KindEndpointSlice:  "EndpointSlice",
	KindPod:            "Pod",
	KindServiceAccount: "ServiceAccount",
	KindTrafficTarget:  "TrafficTarget",
	KindHTTPRouteGroup: "HTTPRouteGroup",
	KindTCPRoute:       "TCPRoute",
	KindTrafficSplit:   "TrafficSplit",
	KindMeshConfig:     "MeshConfig",
	KindRetry:          "Retry",
	KindEgress:         "Egress",

	KindUpstreamTrafficSetting: "UpstreamTrafficSetting",
	KindIngressBackend:         "IngressBackend",
}

// KindName is the Kubernetes kind name of a kind key ("traffictarget" is
// "TrafficTarget"); an unknown key is returned as it is.
func KindName(key string) string {
	if n, ok := kindDisplay[key]; ok {
		return n
	}
	return key
}

// KindKey is the kind key of a Kubernetes kind name ("TrafficTarget" is
// "traffictarget"), the first token of observed keys.
func KindKey(name string) string { return strings.ToLower(name) }
