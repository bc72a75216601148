package app

import (
	"os"
	"regexp"
	"strings"

	"github.com/openservicemesh/osm/libs/identity"
)

// ControlPlane holds the flags that place a component in its mesh and its
// control plane. Every component registers the ones it uses through
// Flags, so that a flag has one name and one description everywhere.
type ControlPlane struct {
	// Namespace is --namespace, the control plane's namespace.
	Namespace string
	// PodName is --pod-name, this replica's name (its pod's name).
	PodName string
	// MeshName is --mesh-name, the value of the monitored-by label of the
	// mesh's namespaces.
	MeshName string
	// MeshConfig is --mesh-config, the name of the MeshConfig in Namespace.
	MeshConfig string
	// TrustDomain is --trust-domain, the SPIFFE trust domain.
	TrustDomain string
	// ClusterDomain is --cluster-domain, the cluster's DNS domain.
	ClusterDomain string

	use CPFlag
}

// CPFlag selects flags of the ControlPlane group.
type CPFlag uint8

// The flags of the ControlPlane group.
const (
	// CPNamespace is --namespace.
	CPNamespace CPFlag = 1 << iota
	// CPPodName is --pod-name.
	CPPodName
	// CPMeshName is --mesh-name.
	CPMeshName
	// CPMeshConfig is --mesh-config (with --namespace).
	CPMeshConfig
	// CPTrustDomain is --trust-domain.
	CPTrustDomain
	// CPClusterDomain is --cluster-domain.
	CPClusterDomain
)

// Defaults of the ControlPlane group.
const (
	DefaultNamespace     = "osm-system"
	DefaultMeshName      = "osm"
	DefaultMeshConfig    = "osm-mesh-config"
	DefaultTrustDomain   = "cluster.local"
	DefaultClusterDomain = "cluster.local"
)

// Flags registers the selected flags. CPMeshConfig brings CPNamespace
// with it.
func (c *ControlPlane) Flags(f *Flags, use CPFlag) {
	if use&CPMeshConfig != 0 {
		use |= CPNamespace
	}
	c.use = use
	for _, fl := range []struct {
		which            CPFlag
		p                *string
		name, def, usage string
	}{
		{CPNamespace, &c.Namespace, "namespace", DefaultNamespace,
			"namespace of the control plane: its Services, Secrets, Leases and MeshConfig are there, and its pods are never injected"},
		{CPPodName, &c.PodName, "pod-name", "",
			"name of this replica, the pod's name (set it from the downward API): it names the instance in leases, sync markers and status reports; empty uses the host name"},
		{CPMeshName, &c.MeshName, "mesh-name", DefaultMeshName,
			"name of the mesh: namespaces labelled openservicemesh.io/monitored-by=<mesh-name> are meshed"},
		{CPMeshConfig, &c.MeshConfig, "mesh-config", DefaultMeshConfig,
			"name of the mesh's MeshConfig, in --namespace"},
		{CPTrustDomain, &c.TrustDomain, "trust-domain", DefaultTrustDomain,
			"SPIFFE trust domain of the mesh: a workload's identity is spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>"},
		{CPClusterDomain, &c.ClusterDomain, "cluster-domain", DefaultClusterDomain,
			"DNS domain of the cluster, for the <service>.<namespace>.svc.<cluster-domain> names of control-plane certificates"},
	} {
		if use&fl.which != 0 {
			f.String(fl.p, fl.name, fl.def, fl.usage)
		}
	}
}

// dnsLabel is a Kubernetes namespace or object name segment (RFC 1123).
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// dnsSubdomain is a Kubernetes object name (RFC 1123 subdomain).
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// labelValue is a Kubernetes label value.
var labelValue = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)

// Validate checks the registered flags and fills PodName from the host
// name when it is empty. Errors name the flag.
func (c *ControlPlane) Validate() error {
	if c.use&CPNamespace != 0 {
		if len(c.Namespace) > 63 || !dnsLabel.MatchString(c.Namespace) {
			return FlagError("namespace", "must be a namespace name (lowercase letters, digits and '-', at most 63), got %q", c.Namespace)
		}
	}
	if c.use&CPPodName != 0 && c.PodName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return FlagError("pod-name", "is required when the host name is unknown")
		}
		c.PodName = h
	}
	if c.use&CPMeshName != 0 {
		if c.MeshName == "" || len(c.MeshName) > 63 || !labelValue.MatchString(c.MeshName) {
			return FlagError("mesh-name", "must be a label value (letters, digits, '-', '_' and '.', at most 63), got %q", c.MeshName)
		}
	}
	if c.use&CPMeshConfig != 0 {
		if strings.Contains(c.MeshConfig, "/") {
			return FlagError("mesh-config", "is the MeshConfig's name in --namespace, without a namespace; got %q", c.MeshConfig)
		}
		if len(c.MeshConfig) > 253 || !dnsSubdomain.MatchString(c.MeshConfig) {
			return FlagError("mesh-config", "must be an object name, got %q", c.MeshConfig)
		}
	}
	if c.use&CPTrustDomain != 0 {
		if err := identity.ValidateTrustDomain(c.TrustDomain); err != nil || len(c.TrustDomain) > 255 {
			return FlagError("trust-domain", "must be a lowercase SPIFFE trust domain such as cluster.local, got %q", c.TrustDomain)
		}
	}
	if c.use&CPClusterDomain != 0 {
		if len(c.ClusterDomain) > 253 || !dnsSubdomain.MatchString(c.ClusterDomain) {
			return FlagError("cluster-domain", "must be a DNS domain such as cluster.local, got %q", c.ClusterDomain)
		}
	}
	return nil
}
