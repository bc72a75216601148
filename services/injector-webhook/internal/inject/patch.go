package inject

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/iptables"
)

// Op is one JSON patch (RFC 6902) operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Request is what Build needs about one pod admission.
type Request struct {
	Pod       *corev1.Pod
	Namespace *corev1.Namespace
	// ProxyUUID identifies the sidecar; it names the bootstrap Secret.
	ProxyUUID string
}

// Result is the patch plus what the caller must create alongside it.
type Result struct {
	// Ops is the JSON patch; empty when the pod already has the sidecar.
	Ops []Op
	// BootstrapSecret is the name of the Secret the sidecar mounts.
	BootstrapSecret string
	// Probes are the rewritten probes, which the bootstrap must serve.
	Probes []OriginalProbe
}

// OriginalProbe is a probe as the user wrote it, before the rewrite sent it
// through the sidecar.
type OriginalProbe struct {
	Container string `json:"container"`
	Kind      string `json:"kind"` // liveness, readiness or startup
	// Protocol is ProbeHTTP (also when empty, as annotations written before
	// it existed are), ProbeHTTPS, ProbeGRPC or ProbeTCP.
	Protocol string `json:"protocol,omitempty"`
	Port     int32  `json:"port"`
	Path     string `json:"path,omitempty"`
	// Service is a gRPC probe's service name.
	Service string `json:"service,omitempty"`
	// ListenPort is the sidecar port the rewritten probe now targets.
	ListenPort int32 `json:"listenPort"`
	// ProbePath is the path the rewritten probe now requests; the original
	// path for an HTTPS probe, HealthcheckPath for a TCP one, empty for a
	// gRPC one.
	ProbePath string `json:"probePath,omitempty"`
}

// Probe protocols in OriginalProbe.Protocol.
const (
	ProbeHTTP  = "http"
	ProbeHTTPS = "https"
	ProbeGRPC  = "grpc"
	ProbeTCP   = "tcp"
)

// BootstrapSecretName is the name of a proxy's bootstrap Secret.
func BootstrapSecretName(proxyUUID string) string { return "envoy-bootstrap-" + proxyUUID }

// InjectedProbes returns the probes an injected pod's sidecar serves, as
// Build recorded them in the pod's original-probes annotation, so that a
// bootstrap can be rebuilt for a pod that already exists.
func InjectedProbes(pod *corev1.Pod) ([]OriginalProbe, error) {
	v, ok := pod.Annotations[AnnotationProbes]
	if !ok {
		return nil, nil
	}
	var probes []OriginalProbe
	if err := json.Unmarshal([]byte(v), &probes); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationProbes, err)
	}
	return probes, nil
}

// Injected reports whether the pod already carries the sidecar, or the
// proxyless gRPC volume, so that a second admission of the same pod
// changes nothing.
func Injected(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == ProxylessVolume {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == InitContainerName {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == SidecarName {
			return true
		}
	}
	return false
}

// Build returns the patch that injects the sidecar into req.Pod. Errors name
// the annotation or field at fault.
func Build(s Settings, req Request) (Result, error) {
	pod := req.Pod
	if Injected(pod) {
		return Result{}, nil
	}
	if req.ProxyUUID == "" {
		return Result{}, fmt.Errorf("no proxy UUID")
	}
	res := Result{BootstrapSecret: BootstrapSecretName(req.ProxyUUID)}
	var ops []Op

	// Probes first: they patch existing containers by index.
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, p := range []struct {
			kind   string
			field  string
			probe  *corev1.Probe
			listen int32
		}{
			{"liveness", "livenessProbe", c.LivenessProbe, PortLiveness},
			{"readiness", "readinessProbe", c.ReadinessProbe, PortReadiness},
			{"startup", "startupProbe", c.StartupProbe, PortStartup},
		} {
			orig, rewritten, err := rewriteProbe(c, p.kind, p.probe, p.listen)
			if err != nil {
				return Result{}, fmt.Errorf("container %s %s: %w", c.Name, p.field, err)
			}
			if rewritten == nil {
				continue
			}
			res.Probes = append(res.Probes, *orig)
			ops = append(ops, Op{"replace", fmt.Sprintf("/spec/containers/%d/%s", i, p.field), rewritten})
		}
	}
	healthcheck := false
	if len(res.Probes) > 0 {
		// Only one container's probes of each kind can go through the
		// sidecar's fixed probe ports; TCP probes share the health-check
		// port, which tells them apart by the app's port.
		seen := map[string]string{}
		for _, p := range res.Probes {
			if p.Protocol == ProbeTCP {
				healthcheck = true
				continue
			}
			if other, ok := seen[p.Kind]; ok {
				return Result{}, fmt.Errorf("containers %s and %s both have an HTTP, HTTPS or gRPC %s probe; only one container per pod can have its %s probe sent through the sidecar", other, p.Container, p.Kind, p.Kind)
			}
			seen[p.Kind] = p.Container
		}
	}
	ipt, err := s.iptablesConfig(pod, healthcheck)
	if err != nil {
		return Result{}, err
	}
	rules, err := iptables.Rules(ipt)
	if err != nil {
		return Result{}, err
	}

	ops = appendToList(ops, "/spec/initContainers", len(pod.Spec.InitContainers) == 0, initContainer(s, rules))
	ops = appendToList(ops, "/spec/containers", false, sidecar(s, req, res.Probes))
	ops = appendToList(ops, "/spec/volumes", len(pod.Spec.Volumes) == 0, corev1.Volume{
		Name:         BootstrapVolume,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: res.BootstrapSecret}},
	})

	labels := map[string]string{layout.LabelProxyUUID: req.ProxyUUID}
	annotations := map[string]string{AnnotationInjected: "true"}
	if len(res.Probes) > 0 {
		b, _ := json.Marshal(res.Probes)
		annotations[AnnotationProbes] = string(b)
	}
	if strings.EqualFold(req.Namespace.Annotations[layout.AnnotationMetrics], "enabled") {
		annotations["prometheus.io/scrape"] = "true"
		annotations["prometheus.io/port"] = fmt.Sprint(PortMetrics)
		annotations["prometheus.io/path"] = "/stats/prometheus"
	}
	ops = appendToMap(ops, "/metadata/labels", pod.Labels, labels)
	ops = appendToMap(ops, "/metadata/annotations", pod.Annotations, annotations)
	res.Ops = ops
	return res, nil
}

// appendToList adds v at the end of the list at path, creating the list
// when it does not exist.
func appendToList(ops []Op, path string, empty bool, v any) []Op {
	if empty {
		return append(ops, Op{"add", path, []any{v}})
	}
	return append(ops, Op{"add", path + "/-", v})
}

// appendToMap sets keys in the map at path, creating the map when absent.
// An existing key is replaced.
func appendToMap(ops []Op, path string, existing, set map[string]string) []Op {
	if existing == nil {
		return append(ops, Op{"add", path, set})
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		op := "add"
		if _, ok := existing[k]; ok {
			op = "replace"
		}
		ops = append(ops, Op{op, path + "/" + escapePointer(k), set[k]})
	}
	return ops
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// rewriteProbe sends a probe through the sidecar and returns the original
// and the rewritten probe; nil for exec probes, and TCP probes naming a
// host, which are left alone. An HTTP probe is rewritten to the
// listener's /osm-<kind>-probe path, which Envoy proxies to the app's path.
// HTTPS and gRPC probes keep their scheme, path and service and only change
// port: their listener passes the connection through to the app's port,
// since the sidecar can neither terminate the app's TLS nor needs to read
// gRPC; without the rewrite the kubelet's connection would reach the mTLS
// inbound listener and fail.
//
// A TCP probe becomes, as in OSM, an HTTP GET of HealthcheckPath on
// PortHealthcheck carrying the app's port in the HeaderOriginalTCPPort
// header: the sidecar answers 200 only while it can connect to that port.
// Left alone, the kubelet's connection to the app's port is redirected to
// Envoy's inbound listener, whose accepting it says nothing of the app:
// the probe passes with the app down once the listener exists, and fails
// with the app up while it does not (before the first LDS update, or for
// a pod that serves no Service). A passthrough listener would not help
// either, since it too accepts before it connects to the app. A probe with
// a host set goes to that host, not through the pod's rules, and is kept.
func rewriteProbe(c *corev1.Container, kind string, p *corev1.Probe, listen int32) (*OriginalProbe, *corev1.Probe, error) {
	if p == nil {
		return nil, nil, nil
	}
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(c, p.HTTPGet.Port)
		if err != nil {
			return nil, nil, err
		}
		path := p.HTTPGet.Path
		if path == "" {
			path = "/"
		}
		out := p.DeepCopy()
		out.HTTPGet.Port = intstr.FromInt32(listen)
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			return &OriginalProbe{Container: c.Name, Kind: kind, Protocol: ProbeHTTPS, Port: port, Path: path,
				ListenPort: listen, ProbePath: path}, out, nil
		}
		orig := &OriginalProbe{Container: c.Name, Kind: kind, Port: port, Path: path,
			ListenPort: listen, ProbePath: "/osm-" + kind + "-probe"}
		out.HTTPGet.Path = orig.ProbePath
		out.HTTPGet.Scheme = corev1.URISchemeHTTP
		return orig, out, nil
	case p.GRPC != nil:
		port, err := resolvePort(c, intstr.FromInt32(p.GRPC.Port))
		if err != nil {
			return nil, nil, err
		}
		orig := &OriginalProbe{Container: c.Name, Kind: kind, Protocol: ProbeGRPC, Port: port, ListenPort: listen}
		if p.GRPC.Service != nil {
			orig.Service = *p.GRPC.Service
		}
		out := p.DeepCopy()
		out.GRPC.Port = listen
		return orig, out, nil
	case p.TCPSocket != nil && p.TCPSocket.Host == "":
		port, err := resolvePort(c, p.TCPSocket.Port)
		if err != nil {
			return nil, nil, err
		}
		orig := &OriginalProbe{Container: c.Name, Kind: kind, Protocol: ProbeTCP, Port: port,
			ListenPort: PortHealthcheck, ProbePath: HealthcheckPath}
		out := p.DeepCopy()
		out.TCPSocket = nil
		out.HTTPGet = &corev1.HTTPGetAction{
			Path: HealthcheckPath, Port: intstr.FromInt32(PortHealthcheck), Scheme: corev1.URISchemeHTTP,
			HTTPHeaders: []corev1.HTTPHeader{{Name: HeaderOriginalTCPPort, Value: fmt.Sprint(port)}},
		}
		return orig, out, nil
	}
	return nil, nil, nil
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return 0, fmt.Errorf("port %d is outside 1-65535", p.IntVal)
		}
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("named port %q is not a port of the container", p.StrVal)
}

func initContainer(s Settings, rules string) corev1.Container {
	f, privileged := false, s.PrivilegedInit
	root := int64(0)
	return corev1.Container{
		Name:            InitContainerName,
		Image:           s.InitImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"/bin/sh", "-c"},
		Args:            []string{"iptables-restore --noflush <<'EOF'\n" + rules + "EOF\n"},
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
			RunAsUser:    &root, RunAsNonRoot: &f, Privileged: &privileged,
		},
	}
}

func sidecar(s Settings, req Request, probes []OriginalProbe) corev1.Container {
	t, f := true, false
	uid := s.ProxyUID
	sa := req.Pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	c := corev1.Container{
		Name:            SidecarName,
		Image:           s.SidecarImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"envoy"},
		Args: []string{
			"--config-path", BootstrapMount + "/bootstrap.json",
			"--log-level", s.LogLevel,
			"--service-cluster", sa + "." + req.Namespace.Name,
			"--service-node", req.ProxyUUID,
		},
		Resources: s.Resources,
		Ports: []corev1.ContainerPort{
			{Name: "proxy-metrics", ContainerPort: PortMetrics, Protocol: corev1.ProtocolTCP},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: BootstrapVolume, MountPath: BootstrapMount, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &uid, RunAsNonRoot: &t, AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &t,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	healthcheck := false
	for _, p := range probes {
		if p.Protocol == ProbeTCP {
			healthcheck = true
			continue
		}
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "probe-" + p.Kind, ContainerPort: p.ListenPort, Protocol: corev1.ProtocolTCP})
	}
	if healthcheck {
		// One port serves every TCP probe, whatever its kind.
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "probe-tcp", ContainerPort: PortHealthcheck, Protocol: corev1.ProtocolTCP})
	}
	return c
}
