package kube

import "k8s.io/apimachinery/pkg/runtime/schema"

// The resources of the CRDs that ApplyCRDs installs, as the tests address
// them through the dynamic client.
var (
	TrafficTargets  = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	HTTPRouteGroups = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"}
	TCPRoutes       = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"}
	TrafficSplits   = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	MeshConfigs     = schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}

	UpstreamTrafficSettings = schema.GroupVersionResource{Group: "policy.openservicemesh.io", Version: "v1alpha1", Resource: "upstreamtrafficsettings"}
	IngressBackends         = schema.GroupVersionResource{Group: "policy.openservicemesh.io", Version: "v1alpha1", Resource: "ingressbackends"}
)
