package command

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshconfig"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/libs/smi"
)

// The resources osm policy check reads.
var (
	trafficTargetsGVR  = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	httpRouteGroupsGVR = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"}
	tcpRoutesGVR       = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"}
	trafficSplitsGVR   = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	meshConfigsGVR     = schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}
)

// errDenied is osm policy check's error when the request is denied: the
// answer is already printed, so main prints nothing more than its exit code.
var errDenied = errors.New("denied: no policy allows the request (see the answer above)")

func policyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain the mesh's traffic policies",
		Long: `policy answers questions about the mesh's SMI traffic policies (TrafficTarget,
HTTPRouteGroup, TCPRoute, TrafficSplit) and its MeshConfig's permissive mode.`,
		Example: `  osm policy check --from bookbuyer/bookbuyer --to bookstore/bookstore:14001 --path /books-bought --method GET`,
	}
	cmd.AddCommand(policyCheckCommand(g))
	return cmd
}

func policyCheckCommand(g *globals) *cobra.Command {
	var from, to, path, method, mesh, meshConfig, output string
	cmd := &cobra.Command{
		Use:   "check --from NS/SA --to NS/SVC[:PORT] [--path P --method M]",
		Short: "Say whether one workload may reach a Service, and which policy allows it",
		Long: `check says whether pods running as the ServiceAccount --from may send a
request to the Service --to, on PORT (a number or a port name; needed when
the Service has several TCP ports), and why:

  allowed   naming the TrafficTarget and the route that allow it: the
            HTTPRouteGroup match (HTTP and gRPC ports), the TCPRoute, or an
            HTTPRouteGroup rule (which OSM lets through to plain TCP ports);
            or the MeshConfig's permissive mode, which allows everything;
  denied    saying why no policy allows it: no TrafficTarget has the
            destination's identity; the ones that would are rejected (with
            the field at fault and the reason, the compiler's words); none
            lists the source; no route matches --path/--method (or the first
            route matching belongs to another source's TrafficTarget, as the
            proxy takes the first match); the Service does not exist, has no
            such port or no pod; or a namespace is not in the mesh.

The destination's identities are the ServiceAccounts of the pods the
Service selects; a request to the apex of a TrafficSplit lands on its
weighted backends' pods, and is allowed only when every one of them allows
it. An HTTP path is matched whole against each match's pathRegex, as Envoy
does; without --path and --method, check says whether any HTTP request is
allowed. A match that requires headers never matches here.

It reads the policies from the Kubernetes API, as the smi-watcher does
(against the dev stack, the kubeconfig and namespace of its context file,
--osm-context or $OSM_CONTEXT),
and judges them with the rules the policy-compiler and the validating
webhook share (libs/policy), so a rejection reads as in the object's
Events. Unlike the compiler, which keeps serving the last accepted version
of an object that became invalid, check counts a rejected object as absent.

Exit code: 0 when allowed, 1 when denied or when check could not answer
(the error says which), so that "osm policy check ... && ..." runs only on
allowed.`,
		Example: `  # may bookbuyer GET /books-bought on the bookstore Service?
  osm policy check --from bookbuyer/bookbuyer --to bookstore/bookstore:14001 --path /books-bought --method GET

  # may bookthief reach it at all? (any HTTP request, the Service's only port)
  osm policy check --from bookthief/bookthief --to bookstore/bookstore

  # in a script
  osm policy check --from app/web --to db/mysql:3306 -o json | jq .reason`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req, err := parseCheckRequest(from, to, path, method)
			if err != nil {
				return err
			}
			if err := g.useContextFile(cmd); err != nil {
				return err
			}
			cs, err := g.clientset()
			if err != nil {
				return err
			}
			dyn, err := g.dynamic()
			if err != nil {
				return err
			}
			if mesh == "" || meshConfig == "" {
				m, mc, err := g.meshNames()
				if err != nil {
					return err
				}
				if mesh == "" {
					mesh = m
				}
				if meshConfig == "" {
					meshConfig = mc
				}
			}
			snap, err := readMesh(cmd.Context(), cs, dyn, mesh, g.namespace, meshConfig, req.ServiceNamespace)
			if err != nil {
				return err
			}
			d := policy.Check(snap, req)
			if err := checkTable(req, d).print(g.streams.Out, output); err != nil {
				return err
			}
			if output == "table" {
				printDecision(g, d)
			}
			if !d.Allowed {
				return errDenied
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the source: NAMESPACE/SERVICEACCOUNT of the client pods (required)")
	f.StringVar(&to, "to", "", "the destination: NAMESPACE/SERVICE[:PORT], PORT a number or a port name (required)")
	f.StringVar(&path, "path", "", "the HTTP request's path, e.g. /books-bought (default: any)")
	f.StringVar(&method, "method", "", "the HTTP request's method, e.g. GET (default: any)")
	f.StringVar(&mesh, "mesh-name", "", "the mesh's name, which its namespaces' label openservicemesh.io/monitored-by carries (default: global.meshName of the release in --namespace, else "+defaultMeshName+")")
	f.StringVar(&meshConfig, "mesh-config", "", "the MeshConfig in --namespace (default: global.meshConfigName of the release in --namespace, else "+defaultMeshConfigName+")")
	addOutputFlag(cmd, &output)
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// parseCheckRequest reads --from NS/SA, --to NS/SVC[:PORT], --path and
// --method.
func parseCheckRequest(from, to, path, method string) (policy.Request, error) {
	var req policy.Request
	sns, sa, ok := strings.Cut(from, "/")
	if !ok || sns == "" || sa == "" || strings.Contains(sa, "/") {
		return req, fmt.Errorf("--from %q: want NAMESPACE/SERVICEACCOUNT, e.g. bookbuyer/bookbuyer", from)
	}
	dns, svc, ok := strings.Cut(to, "/")
	svc, port, _ := strings.Cut(svc, ":")
	if !ok || dns == "" || svc == "" || strings.Contains(svc, "/") || strings.HasSuffix(to, ":") {
		return req, fmt.Errorf("--to %q: want NAMESPACE/SERVICE[:PORT], e.g. bookstore/bookstore:14001", to)
	}
	if path != "" && !strings.HasPrefix(path, "/") {
		return req, fmt.Errorf("--path %q: want an absolute path, e.g. /books-bought", path)
	}
	return policy.Request{Source: policy.Identity{Namespace: sns, Name: sa}, ServiceNamespace: dns, Service: svc, Port: port, Path: path, Method: strings.ToUpper(method)}, nil
}

// dynamic is a dynamic client of the cluster the flags name.
func (g *globals) dynamic() (dynamic.Interface, error) {
	rc, err := g.configFlags().ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (set --kubeconfig or --context)", err)
	}
	return dynamic.NewForConfig(rc)
}

// useContextFile takes the cluster's kubeconfig and the control plane's
// namespace from the context file (--osm-context, $OSM_CONTEXT) when one
// is given, unless --kubeconfig and --namespace are.
func (g *globals) useContextFile(cmd *cobra.Command) error {
	path := cmp.Or(g.osmContext, os.Getenv(osmctx.EnvVar))
	if path == "" {
		return nil
	}
	file, err := osmctx.Read(path)
	if err != nil {
		return err
	}
	if g.kubeconfig == "" {
		g.kubeconfig = file.Kubeconfig
	}
	if !cmd.Flags().Changed("namespace") {
		g.namespace = file.Namespace
	}
	return nil
}

// The chart's defaults of global.meshName and global.meshConfigName,
// which the dev stack uses too.
const (
	defaultMeshName       = "osm"
	defaultMeshConfigName = "osm-mesh-config"
)

// meshNames are global.meshName and global.meshConfigName of the release
// in the control-plane namespace; the chart's defaults, with a note on
// stderr, when no release is installed there (the dev stack installs none).
func (g *globals) meshNames() (mesh, meshConfig string, err error) {
	cfg, err := g.helm()
	if err != nil {
		return "", "", err
	}
	gv := action.NewGetValues(cfg)
	gv.AllValues = true
	vals, err := gv.Run(ReleaseName)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		fmt.Fprintf(g.streams.Err, "no release %s in namespace %s: using the chart's defaults --mesh-name %s --mesh-config %s\n", ReleaseName, g.namespace, defaultMeshName, defaultMeshConfigName)
		return defaultMeshName, defaultMeshConfigName, nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read the mesh's name and MeshConfig from release %s in namespace %s: %w (set --namespace, or --mesh-name and --mesh-config)", ReleaseName, g.namespace, err)
	}
	gl, _ := vals["global"].(map[string]any)
	mesh, _ = gl["meshName"].(string)
	meshConfig, _ = gl["meshConfigName"].(string)
	if mesh == "" || meshConfig == "" {
		return "", "", fmt.Errorf("release %s in namespace %s has no global.meshName or global.meshConfigName: set --mesh-name and --mesh-config", ReleaseName, g.namespace)
	}
	return mesh, meshConfig, nil
}

// readMesh reads what policy.Check needs from the cluster: the namespaces'
// mesh label, the MeshConfig, and the destination namespace's Services,
// pods and SMI objects.
func readMesh(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, mesh, cpNS, meshConfig, ns string) (*policy.Mesh, error) {
	m := &policy.Mesh{Meshed: map[string]bool{}, MeshConfig: cpNS + "/" + meshConfig}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: layout.LabelMonitoredBy + "=" + mesh})
	if err != nil {
		return nil, fmt.Errorf("list the namespaces of mesh %s: %w", mesh, err)
	}
	for _, n := range nss.Items {
		m.Meshed[n.Name] = n.Labels[layout.LabelIgnore] != "true"
	}
	mc, err := dyn.Resource(meshConfigsGVR).Namespace(cpNS).Get(ctx, meshConfig, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("MeshConfig %s/%s not found: set --namespace to the mesh's control-plane namespace, or --mesh-config", cpNS, meshConfig)
	case err != nil:
		return nil, fmt.Errorf("get MeshConfig %s/%s: %w", cpNS, meshConfig, err)
	}
	m.Permissive = meshconfig.Parse(mc).GetTraffic().GetEnablePermissiveTrafficPolicyMode()

	svcs, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the Services of namespace %s: %w", ns, err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the pods of namespace %s: %w", ns, err)
	}
	for i := range svcs.Items {
		m.Services = append(m.Services, serviceOf(&svcs.Items[i], pods.Items))
	}
	if err := listSMI(ctx, dyn, trafficTargetsGVR, "TrafficTargets", ns, smi.DecodeTrafficTarget, &m.TrafficTargets); err != nil {
		return nil, err
	}
	if err := listSMI(ctx, dyn, httpRouteGroupsGVR, "HTTPRouteGroups", ns, smi.DecodeHTTPRouteGroup, &m.HTTPRouteGroups); err != nil {
		return nil, err
	}
	if err := listSMI(ctx, dyn, tcpRoutesGVR, "TCPRoutes", ns, smi.DecodeTCPRoute, &m.TCPRoutes); err != nil {
		return nil, err
	}
	if err := listSMI(ctx, dyn, trafficSplitsGVR, "TrafficSplits", ns, smi.DecodeTrafficSplit, &m.TrafficSplits); err != nil {
		return nil, err
	}
	return m, nil
}

// listSMI lists one SMI kind in ns and reads each object as the
// smi-watcher does.
func listSMI[M any](ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, kinds, ns string, decode func([]byte) (M, error), into *[]M) error {
	l, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("list the %s of namespace %s: the CRD %s.%s is not installed (osm install creates it)", kinds, ns, gvr.Resource, gvr.Group)
		}
		return fmt.Errorf("list the %s of namespace %s: %w", kinds, ns, err)
	}
	for i := range l.Items {
		u := &l.Items[i]
		raw, err := json.Marshal(u.Object)
		if err == nil {
			var v M
			if v, err = decode(raw); err == nil {
				*into = append(*into, v)
				continue
			}
		}
		return fmt.Errorf("read %s %s/%s: %w", strings.TrimSuffix(kinds, "s"), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// serviceOf is a Service's TCP ports and the identities of the running
// pods it selects, as the policy-compiler counts them (a ServiceAccount, not
// Succeeded or Failed). A named target port is resolved from the pods'
// container ports.
func serviceOf(s *corev1.Service, pods []corev1.Pod) policy.Service {
	out := policy.Service{Namespace: s.Namespace, Name: s.Name}
	var selected []*corev1.Pod
	if len(s.Spec.Selector) > 0 && s.Spec.Type != corev1.ServiceTypeExternalName {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		ids := map[policy.Identity]bool{}
		for i := range pods {
			p := &pods[i]
			if p.Spec.ServiceAccountName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			selected = append(selected, p)
			ids[policy.Identity{Namespace: s.Namespace, Name: p.Spec.ServiceAccountName}] = true
		}
		for id := range ids {
			out.Identities = append(out.Identities, id)
		}
		sort.Slice(out.Identities, func(a, b int) bool { return out.Identities[a].Name < out.Identities[b].Name })
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		app := ""
		if p.AppProtocol != nil {
			app = *p.AppProtocol
		}
		sp := policy.ServicePort{Name: p.Name, Port: p.Port, TargetPort: p.Port, Protocol: policy.ProtocolOf(app, p.Name)}
		if n := p.TargetPort.IntValue(); n != 0 {
			sp.TargetPort = int32(n)
		} else if p.TargetPort.StrVal != "" {
		named:
			for _, pod := range selected {
				for _, c := range pod.Spec.Containers {
					for _, cp := range c.Ports {
						if cp.Name == p.TargetPort.StrVal {
							sp.TargetPort = cp.ContainerPort
							break named
						}
					}
				}
			}
		}
		out.Ports = append(out.Ports, sp)
	}
	return out
}

// checkTable is the decision's table: one row per destination identity.
func checkTable(req policy.Request, d policy.Decision) table {
	t := table{header: []string{"FROM", "TO", "DESTINATION", "RESULT", "TRAFFICTARGET", "ROUTE"}, value: d}
	from := req.Source.String()
	if len(d.Legs) == 0 {
		to := req.ServiceNamespace + "/" + req.Service
		if req.Port != "" {
			to += ":" + req.Port
		}
		t.rows = append(t.rows, []string{from, to, "-", verdict(d.Allowed), "-", "-"})
		return t
	}
	for _, l := range d.Legs {
		t.rows = append(t.rows, []string{from, fmt.Sprintf("%s:%d", l.Service, l.Port), l.Identity, verdict(l.Allowed), orDash(l.TrafficTarget), orDash(l.Route)})
	}
	return t
}

func verdict(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printDecision follows the table with the reason, each denied leg's, and
// the rejected objects.
func printDecision(g *globals, d policy.Decision) {
	p, w := g.colour(), g.streams.Out
	head := p.green("allowed")
	if !d.Allowed {
		head = p.red("denied")
	}
	fmt.Fprintf(w, "\n%s (%s): %s\n", head, d.Reason, d.Message)
	// Each destination's own reason, when they differ from the answer's.
	seen := map[string]bool{d.Message: true}
	var legs []string
	for _, l := range d.Legs {
		if !seen[l.Message] {
			seen[l.Message] = true
			legs = append(legs, fmt.Sprintf("  %s (%s): %s", l.Service, l.Identity, l.Message))
		}
	}
	if len(legs) > 0 && len(d.Legs) > 1 {
		fmt.Fprintln(w, strings.Join(legs, "\n"))
	}
	var rejected []string
	for _, r := range d.Rejected {
		if !strings.Contains(d.Message, r.Message) {
			rejected = append(rejected, r.Message)
		}
	}
	if len(rejected) > 0 {
		fmt.Fprintln(w, "\nalso rejected (their Events say the same; fix the field, then check again):")
		for _, m := range rejected {
			fmt.Fprintf(w, "  %s %s\n", p.yellow("✘"), m)
		}
	}
}
