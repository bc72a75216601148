package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// checkMode is what the checks are run before: osm install (and osm
// check), or osm upgrade, which creates no namespace and no CRD and
// patches the objects the release already has.
type checkMode int

const (
	forInstall checkMode = iota
	forUpgrade
)

func (m checkMode) String() string {
	if m == forUpgrade {
		return "upgrade"
	}
	return "install"
}

// runChecks runs osm check's checks on objs (the chart's objects as they
// would be applied, CRDs included) for mode.
func (g *globals) runChecks(ctx context.Context, objs []*unstructured.Unstructured, mode checkMode) (*report, error) {
	rc, err := g.configFlags().ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (set --kubeconfig or --context)", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	r := &report{}
	checkKubeVersion(cs, r)
	if err := checkPermissions(ctx, cs, dyn, g.namespace, objs, mode, r); err != nil {
		return nil, err
	}
	if err := checkCRDConflicts(ctx, dyn, objs, mode, r); err != nil {
		return nil, err
	}
	return r, nil
}

// preApplyChecks runs the checks before osm install or osm upgrade applies
// objs, unless --skip-checks, and prints them as osm check does: to the
// output, or to stderr on a dry run, whose output is the manifest. A ✘
// stops the command before anything is applied.
func (g *globals) preApplyChecks(ctx context.Context, f chartFlags, objs []*unstructured.Unstructured, mode checkMode) error {
	if f.skipChecks {
		return nil
	}
	r, err := g.runChecks(ctx, objs, mode)
	if err != nil {
		return fmt.Errorf("%s: pre-%s checks: %w", mode, mode, err)
	}
	var w io.Writer = g.streams.Out
	if f.dryRun {
		w = g.streams.Err
	}
	p := g.colourFor(w)
	fmt.Fprintf(w, "Pre-%s checks (as osm check):\n\n", mode)
	if err := r.print(w, "table", p); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if r.Failed > 0 {
		what := "nothing was installed"
		if mode == forUpgrade {
			what = "nothing was changed"
		}
		if f.dryRun {
			what = "no manifest printed"
		}
		return fmt.Errorf("%s: %d of %d pre-%s checks failed, %s: fix what each ✘ names (its hint says how), or run with --skip-checks to %s anyway",
			mode, r.Failed, len(r.Results), mode, what, mode)
	}
	return nil
}

// splitManifest splits a release manifest into its objects.
func splitManifest(manifest string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifest, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("render the chart: %w", err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out, nil
}

// renderUpgrade renders what osm upgrade would apply, with the release's
// values when reuse, as a client-side dry run of the upgrade; the chart's
// CRDs are added, which an upgrade does not apply but needs in place.
func (g *globals) renderUpgrade(ctx context.Context, f chartFlags, reuse bool) ([]*unstructured.Unstructured, error) {
	c, vals, err := chartAndValues(f)
	if err != nil {
		return nil, err
	}
	cfg, err := g.helm()
	if err != nil {
		return nil, err
	}
	up := action.NewUpgrade(cfg)
	up.Namespace, up.ReuseValues, up.DryRunStrategy = g.namespace, reuse, action.DryRunClient
	up.WaitStrategy = kube.HookOnlyStrategy
	r, err := up.RunWithContext(ctx, ReleaseName, c, vals)
	if err != nil {
		return nil, g.upgradeError(err)
	}
	objs, err := splitManifest(r.(*releasev1.Release).Manifest)
	if err != nil {
		return nil, err
	}
	for _, crd := range c.CRDObjects() {
		var m map[string]any
		if err := yaml.Unmarshal(crd.File.Data, &m); err != nil {
			return nil, fmt.Errorf("chart CRD %s: %w", crd.Filename, err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// upgradeError says what to do when there is no release to upgrade.
func (g *globals) upgradeError(err error) error {
	if errors.Is(err, driver.ErrNoDeployedReleases) || errors.Is(err, driver.ErrReleaseNotFound) {
		return fmt.Errorf("upgrade: the mesh is not installed in namespace %s (no release %s): run osm install, or set --namespace", g.namespace, ReleaseName)
	}
	return fmt.Errorf("upgrade %s in namespace %s: %w", ReleaseName, g.namespace, err)
}
