package stack

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/openservicemesh/osm/libs/bus"
)

// The services' flags and environment variables the stack sets, each
// spelled here and nowhere else in the stack, so that renaming a service
// flag changes one line.
const (
	flagAdminAddr  = "--admin-addr"
	flagLogFormat  = "--log-format"
	flagKubeconfig = "--kubeconfig"
	flagMeshName   = "--mesh-name"
	flagNATSURL    = "--nats-url"
	flagNATSUser   = "--nats-user"
	envNATSPass    = "OSM_NATS_PASSWORD"

	// The control plane: its namespace, the pod's name, the MeshConfig.
	flagCANamespace       = "--namespace"
	flagWatcherNamespace  = "--namespace"
	flagCompilerNamespace = "--namespace"
	flagInjectorNamespace = "--namespace"
	flagWatcherPod        = "--pod-name"
	flagCompilerPod       = "--pod-name"
	flagEdgePod           = "--pod-name"
	flagCompilerMeshCfg   = "--mesh-config"
	flagInjectorMeshCfg   = "--mesh-config"

	// The CA client of the injector and the edge.
	flagCAAddr        = "--ca-addr"
	flagCAServerName  = "--ca-server-name"
	flagCATrustFile   = "--ca-trust-file"
	flagCATokenFile   = "--ca-bootstrap-token-file"
	flagCATokenType   = "--ca-bootstrap-token-type"
	caTokenPreShared  = "pre-shared"
	envCABootstrapTok = "OSM_DEV_BOOTSTRAP_TOKEN"

	// One component's own.
	flagCAGRPCAddr      = "--grpc-addr"
	flagCADNSNames      = "--server-dns-names"
	flagListenAddr      = "--listen-addr"
	flagWebhookConfig   = "--webhook-config-name"
	envValidatingConfig = "OSM_VALIDATING_WEBHOOK_CONFIG_NAME"
	// The edge's --namespace; the --mesh-config of the edge, the CA and
	// the watcher.
	envEdgeNamespace    = "OSM_NAMESPACE"
	envMeshCfg          = "OSM_MESH_CONFIG"
	flagWebhookService  = "--webhook-service-name"
	flagWebhookPort     = "--webhook-service-port"
	flagEdgeAckInterval = "--ack-status-interval"
	// The bucket writers' (the CA, the watcher, the compiler).
	flagKVReplicas = "--kv-replicas"
)

// Files in Options.Dir that the injector and the edge read.
const (
	tokenFile = "bootstrap-token"
	rootsFile = "ca-roots.pem"
)

// args are the flags of c's process with its admin listener at admin and,
// for the servers, its serving listener at addr; the options' extra flags
// for c come last.
func (m *Mesh) args(c Component, admin, addr string) []string {
	o := m.o
	a := []string{flagAdminAddr, admin, flagLogFormat, "text"}
	kube := []string{flagKubeconfig, o.Cluster.KubeconfigPath()}
	mesh := []string{flagMeshName, o.MeshName}
	caClient := []string{
		flagCAAddr, m.Addr(CertAuthority), flagCAServerName, m.CAServerName(),
		flagCATrustFile, filepath.Join(o.Dir, rootsFile),
		flagCATokenFile, filepath.Join(o.Dir, tokenFile), flagCATokenType, caTokenPreShared,
	}
	if r := c.role(); r != "" {
		a = append(a, flagNATSURL, m.nats.URL(), flagNATSUser, string(r))
		if n := m.nats.Replicas(); n > 1 && c != Edge {
			a = append(a, flagKVReplicas, strconv.Itoa(n))
		}
	}
	switch c {
	case CertAuthority:
		a = append(a, kube...)
		a = append(a, flagCANamespace, o.Namespace, flagCAGRPCAddr, addr, flagCADNSNames, m.CAServerName())
	case Injector:
		_, port, _ := net.SplitHostPort(addr)
		a = append(append(append(a, kube...), mesh...), caClient...)
		a = append(a, flagInjectorNamespace, o.Namespace, flagInjectorMeshCfg, o.MeshConfig, flagListenAddr, addr,
			flagWebhookConfig, m.WebhookConfigName(), flagWebhookService, InjectorService, flagWebhookPort, port)
	case Watcher:
		a = append(append(a, kube...), mesh...)
		a = append(a, flagWatcherNamespace, o.Namespace, flagWatcherPod, o.Name)
	case Compiler:
		a = append(a, mesh...)
		a = append(a, flagCompilerNamespace, o.Namespace, flagCompilerMeshCfg, o.MeshConfig, flagCompilerPod, o.Name)
	case Edge:
		a = append(a, caClient...)
		a = append(a, flagListenAddr, addr, flagEdgePod, o.Name+"-edge-0")
		if o.AckStatusInterval > 0 {
			a = append(a, flagEdgeAckInterval, o.AckStatusInterval.String())
		}
	}
	return append(a, o.Flags[c]...)
}

// env is the environment c's process gets on top of this one's.
func (m *Mesh) env(c Component) map[string]string {
	env := map[string]string{}
	if r := c.role(); r != "" {
		env[envNATSPass] = m.nats.Password(r)
	}
	if c == CertAuthority {
		env[envCABootstrapTok] = m.o.BootstrapToken
	}
	if c == Edge {
		// The MeshConfig the edge follows, through the environment: an
		// edge of a release before it followed one has no such flags and
		// ignores the variables (tests/upgrade runs one); a flag would
		// stop it.
		env[envEdgeNamespace] = m.o.Namespace
	}
	if c == Edge || c == CertAuthority || c == Watcher {
		// The MeshConfig they follow (spec.observability; the edge more),
		// also through the environment, for the same reason; their
		// --namespace is a flag they always had.
		env[envMeshCfg] = m.o.MeshConfig
	}
	if c == Injector {
		// Through the environment, which an injector of a release without
		// policy validation ignores (tests/upgrade runs one): a flag would
		// stop it.
		env[envValidatingConfig] = m.ValidatingWebhookConfigName()
	}
	return env
}

// role is the NATS role c connects as; empty when it does not connect.
func (c Component) role() bus.Role {
	switch c {
	case CertAuthority:
		return bus.RoleCA
	case Watcher:
		return bus.RoleWatcher
	case Compiler:
		return bus.RoleCompiler
	case Edge:
		return bus.RoleEdge
	}
	return ""
}
