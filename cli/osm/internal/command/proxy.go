package command

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmctx"
)

// proxyHelp is what every proxy command says about how it gets its data.
const proxyHelp = `The data comes from the xds-edges' debug API, which only answers the
operator's certificate. osm gets one each run: a 10-minute token of the
ServiceAccount osm-operator (TokenRequest; you need create on
serviceaccounts/token for it, which the chart's Role osm-operator-token
grants), exchanged at the cert-authority for a 15-minute certificate kept in
memory. On a cluster osm reaches the cert-authority and every edge through
the Kubernetes API (port-forward); against the dev stack, through the
context file it writes (--osm-context or $OSM_CONTEXT).`

func proxyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the proxies connected to the xds-edges",
		Long: `proxy lists the proxies connected to every xds-edge, with the generation
each has ACKed, and shows what the edges serve one of them.

` + proxyHelp,
		Example: `  osm proxy list
  osm proxy get config bookstore/bookstore-v1-7d9c --type cds,eds -o json
  osm proxy get certs bookstore/bookstore-v1-7d9c`,
	}
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the config or the certificates the edges serve one proxy",
		Long:  "get shows what the xds-edges serve the proxy of one pod.\n\n" + proxyHelp,
		Example: `  osm proxy get config bookbuyer/bookbuyer-5f7b -o json
  osm proxy get certs bookbuyer/bookbuyer-5f7b`,
	}
	get.AddCommand(proxyGetConfigCommand(g), proxyGetCertsCommand(g))
	cmd.AddCommand(proxyListCommand(g), get)
	return cmd
}

// meshAccess is the CLI's access to the edges, from the context file when
// one is given (--osm-context, $OSM_CONTEXT), else through the Kubernetes
// API; with the clientset of the cluster.
func (g *globals) meshAccess(cmd *cobra.Command) (*access.Client, kubernetes.Interface, error) {
	path := cmp.Or(g.osmContext, os.Getenv(osmctx.EnvVar))
	var file *osmctx.File
	if path != "" {
		var err error
		if file, err = osmctx.Read(path); err != nil {
			return nil, nil, err
		}
		if g.kubeconfig == "" {
			g.kubeconfig = file.Kubeconfig
		}
		if !cmd.Flags().Changed("namespace") {
			g.namespace = file.Namespace
		}
	}
	cs, err := g.clientset()
	if err != nil {
		return nil, nil, err
	}
	var d access.Dialer
	if file != nil {
		d = &access.ContextFile{File: file, Path: path}
	} else {
		rc, err := g.configFlags().ToRESTConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("kubeconfig: %w", err)
		}
		d = &access.PortForward{Config: rc, Kube: cs, Namespace: g.namespace}
	}
	return access.New(cs, g.namespace, d), cs, nil
}

// proxyRow is one proxy as list prints it in json and yaml.
type proxyRow struct {
	// Pod is NAMESPACE/NAME of the pod whose osm-proxy-uuid label is the
	// proxy's node id; empty when no pod has it.
	Pod string `json:"pod"`
	edgedebug.Proxy
}

func proxyListCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every proxy connected to the xds-edges",
		Long: `list asks every ready xds-edge for the proxies connected to it and prints
each one's pod (found by its osm-proxy-uuid label), identity, edge, the
generation it ACKed in full and how many generations that is behind its
edge's, and its last NACK. A proxy is synced when it ACKed the newest
response of every type and nothing waits to be sent; ACKED is then its
edge's generation.

` + proxyHelp,
		Example: `  osm proxy list
  # every field, the ACKed version of each type included
  osm proxy list -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			ac, cs, err := g.meshAccess(cmd)
			if err != nil {
				return err
			}
			defer ac.Close()
			edges, err := ac.Edges(ctx)
			if err != nil {
				return err
			}
			lists, err := askEdges(ctx, edges, func(e *access.Edge) (edgedebug.ProxyList, error) {
				var l edgedebug.ProxyList
				return l, e.Get(ctx, edgedebug.PathProxies, &l)
			}, g.streams.Err)
			if err != nil {
				return err
			}
			pods, err := meshedPods(ctx, cs, "")
			if err != nil {
				fmt.Fprintf(g.streams.Err, "warning: %v; the POD column is empty\n", err)
			}
			return proxyTable(proxyRows(lists, pods)).print(g.streams.Out, output)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// proxyRows are the edges' proxies with their pods (by node id), sorted.
func proxyRows(lists []edgedebug.ProxyList, pods map[string]*corev1.Pod) []proxyRow {
	var rows []proxyRow
	for _, l := range lists {
		for _, p := range l.Proxies {
			rows = append(rows, proxyRow{Pod: podName(pods[p.NodeID]), Proxy: p})
		}
	}
	slices.SortFunc(rows, func(a, b proxyRow) int {
		return cmp.Or(cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.Edge, b.Edge))
	})
	return rows
}

// proxyTable is list's output.
func proxyTable(rows []proxyRow) table {
	t := table{header: []string{"POD", "IDENTITY", "EDGE", "ACKED", "LAG", "SYNCED", "LAST NACK"}, value: rows}
	if rows == nil {
		t.value = []proxyRow{}
	}
	for _, r := range rows {
		pod := cmp.Or(r.Pod, "node "+r.NodeID)
		synced := "no"
		if r.Synced {
			synced = "yes"
		}
		t.rows = append(t.rows, []string{pod, shortIdentity(r.Identity), r.Edge, r.AckedGeneration, strconv.FormatUint(r.Lag, 10), synced, nackText(r.LastNack)})
	}
	return t
}

// shortIdentity is NAMESPACE/SERVICEACCOUNT of a SPIFFE id, or the id.
func shortIdentity(s string) string {
	if id, err := identity.Parse(s); err == nil {
		return id.Namespace + "/" + id.ServiceAccount
	}
	return s
}

// nackText is a NACK in one cell: type, version and the message's start.
func nackText(n *edgedebug.Nack) string {
	if n == nil {
		return "-"
	}
	msg := strings.Join(strings.Fields(n.Message), " ")
	if len(msg) > 60 {
		msg = msg[:57] + "..."
	}
	return fmt.Sprintf("%s %s: %s", n.Type, n.Version, msg)
}

func podName(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

// askEdges calls every edge at once. An edge that fails is reported on
// warn while others answer; when none answers the error names each.
func askEdges[T any](ctx context.Context, edges []*access.Edge, call func(*access.Edge) (T, error), warn interface{ Write([]byte) (int, error) }) ([]T, error) {
	out := make([]T, len(edges))
	errs := make([]error, len(edges))
	var wg sync.WaitGroup
	for i, e := range edges {
		wg.Go(func() {
			defer e.Close()
			out[i], errs[i] = call(e)
		})
	}
	wg.Wait()
	var ok []T
	var failed []error
	for i := range edges {
		if errs[i] != nil {
			failed = append(failed, errs[i])
			continue
		}
		ok = append(ok, out[i])
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("no xds-edge answered (%d tried): %w", len(edges), errors.Join(failed...))
	}
	for _, err := range failed {
		fmt.Fprintf(warn, "warning: %v; its proxies are missing\n", err)
	}
	return ok, ctx.Err()
}

// meshedPods maps node ids (osm-proxy-uuid labels) to pods, in namespace
// ns ("" for all), named name when not empty.
func meshedPods(ctx context.Context, cs kubernetes.Interface, name string) (map[string]*corev1.Pod, error) {
	opts := metav1.ListOptions{LabelSelector: layout.LabelProxyUUID}
	if name != "" {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
	list, err := cs.CoreV1().Pods("").List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list meshed pods (label %s): %w", layout.LabelProxyUUID, err)
	}
	out := map[string]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		out[p.Labels[layout.LabelProxyUUID]] = p
	}
	return out, nil
}

// proxyOf resolves POD (NAMESPACE/NAME, or a NAME unique among meshed
// pods) to its pod and node id. Errors say what to do.
func proxyOf(ctx context.Context, cs kubernetes.Interface, arg string) (*corev1.Pod, string, error) {
	ns, name, qualified := strings.Cut(arg, "/")
	if !qualified {
		name = arg
		pods, err := meshedPods(ctx, cs, name)
		if err != nil {
			return nil, "", err
		}
		var found []*corev1.Pod
		for _, p := range pods {
			found = append(found, p)
		}
		switch len(found) {
		case 0:
			return nil, "", fmt.Errorf("no meshed pod named %s in any namespace: give NAMESPACE/%s (osm proxy list shows the meshed pods)", name, name)
		case 1:
			return found[0], found[0].Labels[layout.LabelProxyUUID], nil
		}
		var where []string
		for _, p := range found {
			where = append(where, p.Namespace+"/"+p.Name)
		}
		slices.Sort(where)
		return nil, "", fmt.Errorf("pod name %s is ambiguous (%s): give NAMESPACE/%s", name, strings.Join(where, ", "), name)
	}
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", fmt.Errorf("pod %s/%s not found", ns, name)
	}
	if err != nil {
		return nil, "", fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	id := p.Labels[layout.LabelProxyUUID]
	if id == "" {
		return nil, "", fmt.Errorf("pod %s/%s is not meshed: it has no %s label, which the injector adds to the pods it gives a proxy. "+
			"Add its namespace with osm namespace add %s and recreate the pod", ns, name, layout.LabelProxyUUID, ns)
	}
	return p, id, nil
}

// askForProxy asks the edges in turn for the pod's proxy at path(nodeID)
// until one has it.
func askForProxy[T any](cmd *cobra.Command, g *globals, arg string, path func(node string) string) (*T, error) {
	ctx := cmd.Context()
	ac, cs, err := g.meshAccess(cmd)
	if err != nil {
		return nil, err
	}
	defer ac.Close()
	pod, node, err := proxyOf(ctx, cs, arg)
	if err != nil {
		return nil, err
	}
	edges, err := ac.Edges(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	for _, e := range edges {
		var v T
		err := e.Get(ctx, path(node), &v)
		e.Close()
		if err == nil {
			return &v, nil
		}
		names = append(names, e.Name)
		var se *access.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			continue
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, fmt.Errorf("the proxy of pod %s/%s (node id %s) is connected to none of the %d edges (%s): its sidecar is not running or cannot reach Service %s/%s",
		pod.Namespace, pod.Name, node, len(edges), strings.Join(names, ", "), g.namespace, access.EdgeService)
}

func proxyGetConfigCommand(g *globals) *cobra.Command {
	var output, types string
	cmd := &cobra.Command{
		Use:   "config POD",
		Short: "Show the resources the edge serves a pod's proxy",
		Long: `config prints the resources the xds-edge serves the proxy of POD now, like
an Envoy config dump: its view of the compiled mesh, limited to what it
subscribed to. The table lists them; -o json and -o yaml give each one whole.
Secrets show their certificates, never their private key ("[redacted]").

POD is NAMESPACE/NAME, or a NAME no other meshed pod has.

` + proxyHelp,
		Example: `  osm proxy get config bookstore/bookstore-v1-7d9c
  # the clusters and endpoints, whole
  osm proxy get config bookstore/bookstore-v1-7d9c --type cds,eds -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if _, err := edgedebug.ParseTypes(types); err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			cfg, err := askForProxy[edgedebug.Config](cmd, g, args[0], func(node string) string {
				p := edgedebug.ConfigPath(node)
				if types != "" {
					p += "?" + edgedebug.QueryType + "=" + types
				}
				return p
			})
			if err != nil {
				return err
			}
			return configTable(cfg).print(g.streams.Out, output)
		},
	}
	cmd.Flags().StringVar(&types, "type", "", "only these types, comma-separated: "+strings.Join(edgedebug.TypeNames(), ", ")+" (default every type the proxy subscribed to)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(edgedebug.TypeNames(), cobra.ShellCompDirectiveNoFileComp))
	addOutputFlag(cmd, &output)
	return cmd
}

// configTable is get config's output.
func configTable(c *edgedebug.Config) table {
	t := table{header: []string{"TYPE", "NAME", "VERSION"}, value: c}
	for _, r := range c.Resources {
		t.rows = append(t.rows, []string{r.Type, r.Name, r.Version})
	}
	return t
}

func proxyGetCertsCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "certs POD",
		Short: "Show the certificates the edge serves a pod's proxy",
		Long: `certs prints the certificates the xds-edge serves the proxy of POD over SDS:
its service certificate's chain (leaf first) and the mesh's trusted roots,
with subject, SANs, serial and expiry. Private keys are never shown.

POD is NAMESPACE/NAME, or a NAME no other meshed pod has.

` + proxyHelp,
		Example: `  osm proxy get certs bookbuyer/bookbuyer-5f7b
  # issuer, validity and fingerprint too
  osm proxy get certs bookbuyer/bookbuyer-5f7b -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			certs, err := askForProxy[edgedebug.Certs](cmd, g, args[0], edgedebug.CertsPath)
			if err != nil {
				return err
			}
			return certsTable(certs).print(g.streams.Out, output)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// certsTable is get certs' output: one row per certificate.
func certsTable(c *edgedebug.Certs) table {
	t := table{header: []string{"SECRET", "KIND", "SUBJECT", "SANS", "SERIAL", "NOT AFTER"}, value: c}
	for _, s := range c.Secrets {
		for _, crt := range s.Certificates {
			sans := strings.Join(append(append([]string(nil), crt.URISANs...), crt.DNSSANs...), ",")
			t.rows = append(t.rows, []string{s.Name, s.Kind, cmp.Or(crt.Subject, "-"), cmp.Or(sans, "-"), crt.Serial, crt.NotAfter.UTC().Format("2006-01-02T15:04:05Z")})
		}
	}
	return t
}
