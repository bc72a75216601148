package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/cli/osm/internal/chart"
)

// chartFlags are the flags of install and upgrade.
type chartFlags struct {
	values     values.Options
	dryRun     bool
	wait       bool
	timeout    time.Duration
	skipChecks bool
}

func (f *chartFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.values.ValueFiles, "values", "f", nil, "a YAML file of chart values (repeatable; later files win)")
	fl.StringArrayVar(&f.values.Values, "set", nil, "a chart value, path=value (repeatable; wins over -f), e.g. --set xdsEdge.replicas=3")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the manifests that would be applied, and change nothing (the checks still run, printed on stderr)")
	fl.BoolVar(&f.wait, "wait", true, "follow the rollouts and print each component's state until all are ready or --timeout passes")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long --wait waits for the components (and Helm for its hooks)")
	fl.BoolVar(&f.skipChecks, "skip-checks", false, "apply without running the checks first (osm check's: cluster version, permissions, CRD conflicts)")
}

// vals merges -f and --set; errors name the file or value.
func (f *chartFlags) vals() (map[string]any, error) {
	v, err := f.values.MergeValues(nil)
	if err != nil {
		return nil, fmt.Errorf("values (-f/--set): %w", err)
	}
	return v, nil
}

const chartHelp = `
Checks: first, the checks of osm check run on the objects about to be
applied (see osm check --help): the cluster's version, the permissions the
command needs, and the CRDs (absent or this chart's, with its versions; an
upgrade needs them present, as Helm never creates CRDs on an upgrade). They
print as osm check prints them, and a ✘ stops the command before anything
is applied, with the hint of each. --dry-run runs them too, printed on
stderr (the manifest is the output), and prints no manifest on a ✘.
--skip-checks applies (or prints) without them.

Values: -f FILE and --set path=value set the chart's values
(deploy/charts/osm/values.yaml lists them; values.schema.json checks them, and
an error names the value). The chart is built into osm: no repository is
needed.

--wait (on by default) follows the Deployments and StatefulSets of the
release and prints each one's state as it changes, until every one is ready;
after --timeout it fails naming those that are not. --wait=false returns once
the objects are created.`

func installCommand(g *globals) *cobra.Command {
	var f chartFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the mesh's control plane with the built-in chart",
		Long: `install installs Open Service Mesh (release "osm") into --namespace, creating
the namespace and the mesh's CRDs.` + chartHelp,
		Example: `  # check the cluster, install with the defaults and wait for the control plane
  osm install

  # install although a check fails (a CRD you will replace, say)
  osm install --skip-checks

  # with your values file and one value more
  osm install -f my-values.yaml --set global.meshName=dev

  # print what would be applied, and apply nothing
  osm install --dry-run > osm.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.install(cmd.Context(), f)
		},
	}
	f.add(cmd)
	return cmd
}

func upgradeCommand(g *globals) *cobra.Command {
	var f chartFlags
	var reuse bool
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade the installed mesh to this osm's chart, or change its values",
		Long: `upgrade upgrades the release "osm" in --namespace to the chart built into this
osm. The values are the chart's defaults with -f and --set over them, as
helm upgrade does; --reuse-values keeps the release's current values
instead, with -f and --set over those. As with helm, the CRDs are not
updated: a chart whose CRDs changed needs them applied first.` + chartHelp,
		Example: `  # run three compilers (one active, two warm), keeping the other values
  osm upgrade --reuse-values --set policyCompiler.replicas=3

  # show the manifests the upgrade would apply
  osm upgrade --reuse-values --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.upgrade(cmd.Context(), f, reuse)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&reuse, "reuse-values", false, "start from the release's current values instead of the chart's defaults")
	return cmd
}

func uninstallCommand(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the mesh's control plane",
		Long: `uninstall deletes every object of the release "osm" in --namespace. As with
helm, the CRDs stay (deleting them would delete every SMI policy), and so
do the namespace and the meshed namespaces' labels; the output says how to
remove them. Running sidecars keep their last configuration until their pods
are restarted.`,
		Example: `  osm uninstall
  osm uninstall --namespace osm-dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.uninstall(cmd.Context(), timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long Helm waits for the deletions")
	return cmd
}

func (g *globals) install(ctx context.Context, f chartFlags) error {
	c, vals, err := chartAndValues(f)
	if err != nil {
		return err
	}
	if !f.skipChecks {
		objs, err := g.renderChart(ctx, f)
		if err != nil {
			return err
		}
		if err := g.preApplyChecks(ctx, f, objs, forInstall); err != nil {
			return err
		}
	}
	cfg, err := g.helm()
	if err != nil {
		return err
	}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = ReleaseName, g.namespace, true
	in.Timeout = f.timeout
	in.WaitStrategy = kube.HookOnlyStrategy // the rollouts are followed below, with progress
	if f.dryRun {
		in.DryRunStrategy, in.IncludeCRDs, in.Replace = action.DryRunClient, true, true
	}
	r, err := in.RunWithContext(ctx, c, vals)
	if err != nil {
		// Helm says so with an unexported error (action/install.go).
		if errors.Is(err, driver.ErrReleaseExists) || strings.Contains(err.Error(), "cannot reuse a name that is still in use") {
			return fmt.Errorf("install: the mesh is already installed in namespace %s (release %s): run osm upgrade", g.namespace, ReleaseName)
		}
		return fmt.Errorf("install %s into namespace %s: %w", ReleaseName, g.namespace, err)
	}
	rel := r.(*releasev1.Release)
	if f.dryRun {
		return printManifest(g.streams.Out, rel)
	}
	return g.afterApply(ctx, "installed", rel, f)
}

func (g *globals) upgrade(ctx context.Context, f chartFlags, reuse bool) error {
	c, vals, err := chartAndValues(f)
	if err != nil {
		return err
	}
	if !f.skipChecks {
		objs, err := g.renderUpgrade(ctx, f, reuse)
		if err != nil {
			return err
		}
		if err := g.preApplyChecks(ctx, f, objs, forUpgrade); err != nil {
			return err
		}
	}
	cfg, err := g.helm()
	if err != nil {
		return err
	}
	up := action.NewUpgrade(cfg)
	up.Namespace, up.Timeout, up.ReuseValues = g.namespace, f.timeout, reuse
	up.WaitStrategy = kube.HookOnlyStrategy
	if f.dryRun {
		up.DryRunStrategy = action.DryRunClient
	}
	r, err := up.RunWithContext(ctx, ReleaseName, c, vals)
	if err != nil {
		return g.upgradeError(err)
	}
	rel := r.(*releasev1.Release)
	if f.dryRun {
		return printManifest(g.streams.Out, rel)
	}
	return g.afterApply(ctx, "upgraded", rel, f)
}

func (g *globals) uninstall(ctx context.Context, timeout time.Duration) error {
	cfg, err := g.helm()
	if err != nil {
		return err
	}
	mesh, err := g.meshName() // for the hint; the release is gone afterwards
	if err != nil {
		mesh = "MESH"
	}
	un := action.NewUninstall(cfg)
	un.Timeout, un.WaitStrategy = timeout, kube.HookOnlyStrategy
	if _, err := un.Run(ReleaseName); err != nil {
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return fmt.Errorf("uninstall: the mesh is not installed in namespace %s (no release %s): set --namespace", g.namespace, ReleaseName)
		}
		return fmt.Errorf("uninstall %s from namespace %s: %w", ReleaseName, g.namespace, err)
	}
	c, err := chart.Load()
	if err != nil {
		return err
	}
	crds, err := crdNames(c)
	if err != nil {
		return err
	}
	p := g.colour()
	fmt.Fprintf(g.streams.Out, "%s OSM is uninstalled from namespace %s.\n\nLeft in place:\n", p.green("✔"), g.namespace)
	fmt.Fprintf(g.streams.Out, "  the namespace:          kubectl delete namespace %s\n", g.namespace)
	fmt.Fprintf(g.streams.Out, "  the meshed namespaces:  osm namespace list --mesh-name %[1]s, then osm namespace remove NAMESPACE --mesh-name %[1]s\n", mesh)
	fmt.Fprintf(g.streams.Out, "  the CRDs (and every SMI policy with them):\n    kubectl delete crd %s\n", strings.Join(crds, " "))
	return nil
}

// crdNames are the names of the chart's CRDs.
func crdNames(c *chartv2.Chart) ([]string, error) {
	var out []string
	for _, crd := range c.CRDObjects() {
		var m struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(crd.File.Data, &m); err != nil || m.Metadata.Name == "" {
			return nil, fmt.Errorf("chart CRD %s: no metadata.name (%v)", crd.Filename, err)
		}
		out = append(out, m.Metadata.Name)
	}
	sort.Strings(out)
	return out, nil
}

func chartAndValues(f chartFlags) (*chartv2.Chart, map[string]any, error) {
	vals, err := f.vals()
	if err != nil {
		return nil, nil, err
	}
	c, err := chart.Load()
	if err != nil {
		return nil, nil, err
	}
	return c, vals, nil
}

// printManifest writes a dry run's manifests, as helm template does.
func printManifest(w io.Writer, rel *releasev1.Release) error {
	_, err := io.WriteString(w, strings.TrimSpace(rel.Manifest)+"\n")
	return err
}

// afterApply follows the rollouts when --wait, then says what to do next.
func (g *globals) afterApply(ctx context.Context, verb string, rel *releasev1.Release, f chartFlags) error {
	p := g.colour()
	out := g.streams.Out
	fmt.Fprintf(out, "%s %s release %s (revision %d, chart %s-%s) in namespace %s\n",
		p.green("✔"), strings.ToUpper(verb[:1])+verb[1:], rel.Name, rel.Version, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version, rel.Namespace)
	if f.wait {
		cs, err := g.clientset()
		if err != nil {
			return err
		}
		if err := waitRollouts(ctx, cs, rel.Namespace, rel.Name, f.timeout, out, p); err != nil {
			return err
		}
	}
	mesh := "osm"
	if gl, ok := rel.Config["global"].(map[string]any); ok {
		if m, ok := gl["meshName"].(string); ok && m != "" {
			mesh = m
		}
	}
	if !f.wait {
		fmt.Fprintf(out, "Not waiting for the components (--wait=false): kubectl get pods -n %s shows them starting.\n", rel.Namespace)
	}
	fmt.Fprintf(out, `
Next:
  # check that the mesh works: every check ✔ (osm verify --help)
  osm verify%[2]s
  # add a namespace to mesh %[1]q: its new pods get the Envoy sidecar
  osm namespace add NAMESPACE%[2]s
  # restart the workloads that were running before, to inject them
  kubectl rollout restart deployment -n NAMESPACE
  # see the meshed namespaces
  osm namespace list%[2]s
`, mesh, nsFlag(g.namespace))
	return nil
}

// nsFlag is the --namespace flag to repeat in a hint, empty for the default.
func nsFlag(ns string) string {
	if ns == DefaultNamespace {
		return ""
	}
	return " --namespace " + ns
}
