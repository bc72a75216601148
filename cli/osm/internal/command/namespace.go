package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/layout"
)

func namespaceCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "namespace",
		Aliases: []string{"ns"},
		Short:   "Add namespaces to the mesh, remove them, list them",
		Long: `A namespace is in the mesh when its label ` + layout.LabelMonitoredBy + `
equals the mesh's name (the chart's global.meshName). The injector then adds
the Envoy sidecar to the pods created in it, unless the annotation
` + layout.AnnotationSidecarInjection + ` (on the namespace or the pod) is "disabled".`,
		Example: `  osm namespace add bookstore bookbuyer
  osm namespace list -o yaml
  osm namespace remove bookbuyer`,
	}
	cmd.AddCommand(namespaceAddCommand(g), namespaceRemoveCommand(g), namespaceListCommand(g))
	return cmd
}

func namespaceAddCommand(g *globals) *cobra.Command {
	var mesh string
	var noInjection bool
	cmd := &cobra.Command{
		Use:   "add NAMESPACE...",
		Short: "Add namespaces to the mesh",
		Long: `add labels each namespace ` + layout.LabelMonitoredBy + `=<mesh> and annotates it
` + layout.AnnotationSidecarInjection + `=enabled (or disabled with
--disable-sidecar-injection). Pods created afterwards get the sidecar; restart
the running ones to inject them. The mesh's name is read from the release in
--namespace unless --mesh-name gives it.`,
		Example: `  osm namespace add bookstore
  # meshed (its Services and policies are watched) but no sidecars injected
  osm namespace add legacy --disable-sidecar-injection`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeNamespaces,
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := g.clientset()
			if err != nil {
				return err
			}
			if mesh == "" {
				if mesh, err = g.meshName(); err != nil {
					return err
				}
			}
			inj := "enabled"
			if noInjection {
				inj = "disabled"
			}
			for _, ns := range args {
				if err := g.addNamespace(cmd.Context(), cs, ns, mesh, inj); err != nil {
					return err
				}
				fmt.Fprintf(g.streams.Out, "%s namespace %s is in mesh %s (sidecar injection %s)\n", g.colour().green("✔"), ns, mesh, inj)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mesh, "mesh-name", "", "the mesh's name (default: global.meshName of the release in --namespace)")
	cmd.Flags().BoolVar(&noInjection, "disable-sidecar-injection", false, "annotate the namespace sidecar-injection=disabled: in the mesh, but no sidecar is injected")
	return cmd
}

func namespaceRemoveCommand(g *globals) *cobra.Command {
	var mesh string
	cmd := &cobra.Command{
		Use:   "remove NAMESPACE...",
		Short: "Remove namespaces from the mesh",
		Long: `remove deletes the label ` + layout.LabelMonitoredBy + ` and the annotation
` + layout.AnnotationSidecarInjection + ` of each namespace. It refuses a namespace
of another mesh. Pods keep their sidecars until they are restarted.`,
		Example: `  osm namespace remove bookstore
  # then drop the sidecars of its running pods
  kubectl rollout restart deployment -n bookstore`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeNamespaces,
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := g.clientset()
			if err != nil {
				return err
			}
			if mesh == "" {
				if mesh, err = g.meshName(); err != nil {
					return err
				}
			}
			for _, ns := range args {
				if err := removeNamespace(cmd.Context(), cs, ns, mesh); err != nil {
					return err
				}
				fmt.Fprintf(g.streams.Out, "%s namespace %s is no longer in mesh %s\n", g.colour().green("✔"), ns, mesh)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mesh, "mesh-name", "", "the mesh's name (default: global.meshName of the release in --namespace)")
	return cmd
}

// namespaceRow is one namespace of namespace list, the json and yaml form.
type namespaceRow struct {
	Namespace        string `json:"namespace"`
	Mesh             string `json:"mesh"`
	SidecarInjection string `json:"sidecarInjection"`
}

func namespaceListCommand(g *globals) *cobra.Command {
	var mesh, output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the namespaces in a mesh, with their sidecar injection",
		Long: `list shows every namespace labelled ` + layout.LabelMonitoredBy + ` (of any mesh,
or of --mesh-name's), with its mesh and its sidecar injection as the injector
decides it for a pod without an annotation of its own: enabled (the
annotation says so, or there is none), disabled, ignored (the label
` + layout.LabelIgnore + `) or invalid (an annotation the injector refuses).`,
		Example: `  osm namespace list
  osm namespace list --mesh-name osm -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cs, err := g.clientset()
			if err != nil {
				return err
			}
			rows, err := listNamespaces(cmd.Context(), cs, mesh)
			if err != nil {
				return err
			}
			t := table{header: []string{"NAMESPACE", "MESH", "SIDECAR-INJECTION"}, value: rows}
			for _, r := range rows {
				t.rows = append(t.rows, []string{r.Namespace, r.Mesh, r.SidecarInjection})
			}
			if output == "table" && len(rows) == 0 {
				fmt.Fprintln(g.streams.Out, "No namespace is in a mesh: add one with osm namespace add NAMESPACE")
				return nil
			}
			return t.print(g.streams.Out, output)
		},
	}
	cmd.Flags().StringVar(&mesh, "mesh-name", "", "list only the namespaces of this mesh")
	addOutputFlag(cmd, &output)
	return cmd
}

// meshName is global.meshName of the release in the control-plane
// namespace (the chart's default when the values leave it out).
func (g *globals) meshName() (string, error) {
	cfg, err := g.helm()
	if err != nil {
		return "", err
	}
	gv := action.NewGetValues(cfg)
	gv.AllValues = true
	vals, err := gv.Run(ReleaseName)
	if err != nil {
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return "", fmt.Errorf("no mesh is installed in namespace %s (release %s) to read its name from: set --namespace, or --mesh-name", g.namespace, ReleaseName)
		}
		return "", fmt.Errorf("read the mesh name from release %s in namespace %s: %w (or set --mesh-name)", ReleaseName, g.namespace, err)
	}
	if gl, ok := vals["global"].(map[string]any); ok {
		if m, ok := gl["meshName"].(string); ok && m != "" {
			return m, nil
		}
	}
	return "", fmt.Errorf("release %s in namespace %s has no global.meshName: set --mesh-name", ReleaseName, g.namespace)
}

// addNamespace labels and annotates ns. The control plane's namespace and
// kube-system are refused: the injector's webhook never selects them.
func (g *globals) addNamespace(ctx context.Context, cs kubernetes.Interface, ns, mesh, injection string) error {
	if ns == g.namespace || ns == metav1.NamespaceSystem {
		return fmt.Errorf("namespace %s: the mesh's control plane and kube-system cannot be in the mesh (the injector skips them)", ns)
	}
	cur, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s does not exist: create it first (kubectl create namespace %s)", ns, ns)
	}
	if err != nil {
		return fmt.Errorf("read namespace %s: %w", ns, err)
	}
	if other := cur.Labels[layout.LabelMonitoredBy]; other != "" && other != mesh {
		return fmt.Errorf("namespace %s is in mesh %s (label %s): remove it from that mesh first", ns, other, layout.LabelMonitoredBy)
	}
	return patchNamespace(ctx, cs, ns, map[string]any{layout.LabelMonitoredBy: mesh},
		map[string]any{layout.AnnotationSidecarInjection: injection})
}

// removeNamespace drops ns's label and annotation; ns must be in mesh.
func removeNamespace(ctx context.Context, cs kubernetes.Interface, ns, mesh string) error {
	cur, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s does not exist", ns)
	}
	if err != nil {
		return fmt.Errorf("read namespace %s: %w", ns, err)
	}
	switch other := cur.Labels[layout.LabelMonitoredBy]; other {
	case mesh:
	case "":
		return fmt.Errorf("namespace %s is in no mesh (no label %s)", ns, layout.LabelMonitoredBy)
	default:
		return fmt.Errorf("namespace %s is in mesh %s, not %s: set --mesh-name %s to remove it from that mesh", ns, other, mesh, other)
	}
	return patchNamespace(ctx, cs, ns, map[string]any{layout.LabelMonitoredBy: nil},
		map[string]any{layout.AnnotationSidecarInjection: nil})
}

// patchNamespace merge-patches ns's labels and annotations (nil deletes).
func patchNamespace(ctx context.Context, cs kubernetes.Interface, ns string, labels, annotations map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels, "annotations": annotations}})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "osm-cli"}); err != nil {
		return fmt.Errorf("patch namespace %s: %w", ns, err)
	}
	return nil
}

// listNamespaces returns the namespaces in a mesh (mesh, or any), sorted.
func listNamespaces(ctx context.Context, cs kubernetes.Interface, mesh string) ([]namespaceRow, error) {
	sel := layout.LabelMonitoredBy
	if mesh != "" {
		sel += "=" + mesh
	}
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list namespaces labelled %s: %w", sel, err)
	}
	rows := []namespaceRow{}
	for _, ns := range list.Items {
		rows = append(rows, namespaceRow{Namespace: ns.Name, Mesh: ns.Labels[layout.LabelMonitoredBy], SidecarInjection: injection(&ns)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Namespace < rows[j].Namespace })
	return rows, nil
}

// injection is a meshed namespace's sidecar injection for a pod without
// an annotation, by the injector's rules
// (services/injector-webhook/internal/inject.Decide).
func injection(ns *corev1.Namespace) string {
	if v, ok := ns.Labels[layout.LabelIgnore]; ok && v != "false" {
		return "ignored"
	}
	v, ok := ns.Annotations[layout.AnnotationSidecarInjection]
	if !ok {
		return "enabled"
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "enabled", "yes", "true":
		return "enabled"
	case "disabled", "no", "false":
		return "disabled"
	}
	return fmt.Sprintf("invalid (%s=%q)", layout.AnnotationSidecarInjection, v)
}

// completeNamespaces completes namespace names from the cluster.
func (g *globals) completeNamespaces(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cs, err := g.clientset()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := cs.CoreV1().Namespaces().List(cmd.Context(), metav1.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, ns := range list.Items {
		out = append(out, ns.Name)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
