package command

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/action"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// MinKubeVersion is the oldest Kubernetes the chart supports: its CRDs
// validate with CEL rules (x-kubernetes-validations), GA in 1.29.
const MinKubeVersion = "1.29.0"

// minKubeAPI is an API group version that Kubernetes 1.29 added, which
// dates an apiserver without a version stamp.
var minKubeAPI = schema.GroupVersion{Group: "flowcontrol.apiserver.k8s.io", Version: "v1"}

// partOfLabel marks the chart's CRDs (deploy/charts/osm/crds).
const partOfLabel = "app.kubernetes.io/part-of"

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// The categories of osm check.
const (
	catKube  = "kubernetes-version"
	catPerms = "permissions"
	catCRDs  = "custom resource definitions"
)

func checkCommand(g *globals) *cobra.Command {
	var f chartFlags
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the cluster is ready for osm install",
		Long: `check runs, before osm install, the checks that would make it fail half-way:

  kubernetes-version   the cluster's version is ` + MinKubeVersion + ` or later (the CRDs'
                       CEL validation rules are GA from 1.29);
  permissions          you may create every object the chart creates, in
                       --namespace or cluster-wide (SelfSubjectAccessReview),
                       the namespace itself and Helm's release Secret; and,
                       since Kubernetes lets you create a Role or ClusterRole
                       only with the permissions you hold (or escalate), you
                       hold every rule of the chart's Roles and ClusterRoles;
  custom resource      each CRD of the chart is absent (osm install creates
  definitions          it) or is this chart's (label app.kubernetes.io/part-of=osm)
                       with the chart's versions; a CRD of the same name from
                       another SMI implementation, or with other versions,
                       is a conflict, as Helm never updates CRDs.

osm install runs these checks itself before it applies anything, and osm
upgrade those that apply to an upgrade (--skip-checks skips them). The
objects are those the chart renders with -f and --set, as osm install
would render them. Each check prints ✔ or ✘, and a ✘ a hint; the exit code
is non-zero when any check fails. Colour only on a terminal (NO_COLOR
turns it off).`,
		Example: `  # before osm install
  osm check

  # with the values you will install with, as JSON
  osm check -f my-values.yaml --set xdsEdge.replicas=3 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			r, err := g.preinstallChecks(cmd.Context(), f)
			if err != nil {
				return err
			}
			if err := r.print(g.streams.Out, output, g.colour()); err != nil {
				return err
			}
			return r.err("check")
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.values.ValueFiles, "values", "f", nil, "a YAML file of chart values, as for osm install (repeatable)")
	fl.StringArrayVar(&f.values.Values, "set", nil, "a chart value, path=value, as for osm install (repeatable)")
	addOutputFlag(cmd, &output)
	return cmd
}

// preinstallChecks runs osm check's checks.
func (g *globals) preinstallChecks(ctx context.Context, f chartFlags) (*report, error) {
	objs, err := g.renderChart(ctx, f)
	if err != nil {
		return nil, err
	}
	return g.runChecks(ctx, objs, forInstall)
}

// renderChart renders the embedded chart with the flags' values, CRDs
// included, without touching the cluster.
func (g *globals) renderChart(ctx context.Context, f chartFlags) ([]*unstructured.Unstructured, error) {
	c, vals, err := chartAndValues(f)
	if err != nil {
		return nil, err
	}
	cfg, err := g.helm()
	if err != nil {
		return nil, err
	}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = ReleaseName, g.namespace
	in.DryRunStrategy, in.IncludeCRDs, in.Replace = action.DryRunClient, true, true
	rel, err := in.RunWithContext(ctx, c, vals)
	if err != nil {
		return nil, fmt.Errorf("render the chart: %w", err)
	}
	return splitManifest(rel.(*releasev1.Release).Manifest)
}

// checkKubeVersion compares the server's version with MinKubeVersion.
func checkKubeVersion(cs kubernetes.Interface, r *report) {
	info, err := cs.Discovery().ServerVersion()
	if err != nil {
		r.fail(catKube, "check --kubeconfig and --context, and that the cluster answers kubectl version", "the cluster's version: %v", err)
		return
	}
	v, err := utilversion.ParseGeneric(info.GitVersion)
	if err != nil {
		r.fail(catKube, "", "the cluster's version %q: %v", info.GitVersion, err)
		return
	}
	if v.Major() == 0 {
		// An apiserver built from source without version stamps (v0.0.0):
		// judge it by an API that 1.29 added.
		if err := discovery.ServerSupportsVersion(cs.Discovery(), minKubeAPI); err != nil {
			r.fail(catKube, "upgrade the cluster: the chart's CRDs use CEL validation rules (x-kubernetes-validations), GA in Kubernetes 1.29",
				"the cluster's version %s is unstamped, and it does not serve %s, which Kubernetes 1.29 added", info.GitVersion, minKubeAPI)
			return
		}
		r.pass(catKube, "the cluster's version %s is unstamped, and it serves %s: Kubernetes 1.29 or later", info.GitVersion, minKubeAPI)
		return
	}
	if v.LessThan(utilversion.MustParseGeneric(MinKubeVersion)) {
		r.fail(catKube, "upgrade the cluster: the chart's CRDs use CEL validation rules (x-kubernetes-validations), GA in Kubernetes 1.29",
			"the cluster's version %s is older than %s", info.GitVersion, MinKubeVersion)
		return
	}
	r.pass(catKube, "the cluster's version %s is %s or later", info.GitVersion, MinKubeVersion)
}

// permission is one permission osm install needs.
type permission struct {
	verb, group, resource, namespace, name string
}

func (a permission) String() string {
	res := a.resource
	if a.group != "" {
		res += "." + a.group
	}
	if a.name != "" {
		res += "/" + a.name
	}
	if a.namespace != "" {
		return fmt.Sprintf("%s %s in namespace %s", a.verb, res, a.namespace)
	}
	return fmt.Sprintf("%s %s (cluster-wide)", a.verb, res)
}

// allowed asks the apiserver whether the caller may do a.
func (a permission) allowed(ctx context.Context, cs kubernetes.Interface) (bool, error) {
	rev, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
		Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace, Name: a.name}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SelfSubjectAccessReview of %s: %w", a, err)
	}
	return rev.Status.Allowed, nil
}

// checkPermissions checks that the caller may create every object of objs
// (and the namespace, and Helm's release Secret), and holds every rule of
// the chart's Roles and ClusterRoles unless it may escalate. For an
// upgrade: patch on the objects that exist, create on the others, create
// and update on the release Secrets (Helm marks the last one superseded);
// neither the namespace nor the CRDs, which an upgrade does not apply.
func checkPermissions(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ns string, objs []*unstructured.Unstructured, mode checkMode, r *report) error {
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	crds := map[schema.GroupKind]apiextv1.CustomResourceDefinition{}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			var crd apiextv1.CustomResourceDefinition
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &crd); err != nil {
				return fmt.Errorf("the chart's CRD %s: %w", o.GetName(), err)
			}
			crds[schema.GroupKind{Group: crd.Spec.Group, Kind: crd.Spec.Names.Kind}] = crd
		}
	}
	needs := map[permission]int{}
	// osm install creates the namespace unless it exists (or, if the
	// caller may not read it, might have to)
	if mode == forInstall {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			needs[permission{verb: "create", resource: "namespaces"}]++
		}
	} else {
		needs[permission{verb: "update", resource: "secrets", namespace: ns}]++
	}
	needs[permission{verb: "create", resource: "secrets", namespace: ns}]++ // Helm's release record
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		if mode == forUpgrade && gvk.Kind == "CustomResourceDefinition" {
			continue
		}
		a := permission{verb: "create", group: gvk.Group}
		if crd, ok := crds[gvk.GroupKind()]; ok {
			a.resource = crd.Spec.Names.Plural
			if crd.Spec.Scope == apiextv1.NamespaceScoped {
				a.namespace = ns
			}
		} else {
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				r.fail(catPerms, "the cluster does not serve this API: check the cluster's version", "%s %s: %v", gvk.Kind, o.GetName(), err)
				continue
			}
			a.resource = m.Resource.Resource
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				a.namespace = ns
				if o.GetNamespace() != "" {
					a.namespace = o.GetNamespace()
				}
			}
		}
		if mode == forUpgrade {
			// Helm patches what exists; a read it may not make counts as
			// existing (it needs patch then, and the upgrade says so).
			res := dyn.Resource(gvk.GroupVersion().WithResource(a.resource))
			var err error
			if a.namespace != "" {
				_, err = res.Namespace(a.namespace).Get(ctx, o.GetName(), metav1.GetOptions{})
			} else {
				_, err = res.Get(ctx, o.GetName(), metav1.GetOptions{})
			}
			if !apierrors.IsNotFound(err) {
				a.verb = "patch"
			}
		}
		needs[a]++
	}
	keys := make([]permission, 0, len(needs))
	for a := range needs {
		keys = append(keys, a)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, a := range keys {
		ok, err := a.allowed(ctx, cs)
		if err != nil {
			return err
		}
		if ok {
			r.pass(catPerms, "may %s", a)
		} else {
			r.fail(catPerms, "ask a cluster admin to grant it, or run osm "+mode.String()+" as a cluster admin", "may not %s", a)
		}
	}
	return checkRoleRules(ctx, cs, ns, objs, mode, r)
}

// checkRoleRules: the apiserver lets a user create a Role or ClusterRole
// only with rules it holds itself, unless it may escalate them.
func checkRoleRules(ctx context.Context, cs kubernetes.Interface, ns string, objs []*unstructured.Unstructured, mode checkMode, r *report) error {
	for _, o := range objs {
		kind := o.GetKind()
		if o.GroupVersionKind().Group != rbacv1.GroupName || (kind != "Role" && kind != "ClusterRole") {
			continue
		}
		roleNS := ""
		resource := "clusterroles"
		if kind == "Role" {
			roleNS, resource = ns, "roles"
			if o.GetNamespace() != "" {
				roleNS = o.GetNamespace()
			}
		}
		esc, err := permission{verb: "escalate", group: rbacv1.GroupName, resource: resource, namespace: roleNS}.allowed(ctx, cs)
		if err != nil {
			return err
		}
		if esc {
			r.pass(catPerms, "may escalate %s, so may create %s %s", resource, kind, o.GetName())
			continue
		}
		var role rbacv1.ClusterRole // a Role's rules have the same shape
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			return fmt.Errorf("the chart's %s %s: %w", kind, o.GetName(), err)
		}
		var missing []string
		for _, rule := range role.Rules {
			names := rule.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, verb := range rule.Verbs {
				for _, group := range rule.APIGroups {
					for _, res := range rule.Resources {
						for _, name := range names {
							a := permission{verb: verb, group: group, resource: res, namespace: roleNS, name: name}
							ok, err := a.allowed(ctx, cs)
							if err != nil {
								return err
							}
							if !ok {
								missing = append(missing, a.String())
							}
						}
					}
				}
			}
		}
		if len(missing) == 0 {
			r.pass(catPerms, "hold every rule of %s %s", kind, o.GetName())
			continue
		}
		r.fail(catPerms, "you may create or change a role only with the permissions you hold: ask a cluster admin for them (or for escalate on "+resource+"), or run osm "+mode.String()+" as a cluster admin",
			"hold not every rule of %s %s: may not %s", kind, o.GetName(), strings.Join(missing, "; "))
	}
	return nil
}

// checkCRDConflicts compares each CRD of the chart with the cluster's. An
// absent CRD is a failure before an upgrade: Helm creates CRDs only at
// install.
func checkCRDConflicts(ctx context.Context, dyn dynamic.Interface, objs []*unstructured.Unstructured, mode checkMode, r *report) error {
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		var want apiextv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &want); err != nil {
			return fmt.Errorf("the chart's CRD %s: %w", o.GetName(), err)
		}
		u, err := dyn.Resource(crdGVR).Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && mode == forUpgrade {
			r.fail(catCRDs, "Helm creates CRDs only at install: apply the chart's (kubectl apply -f deploy/charts/osm/crds/, or the CustomResourceDefinitions of osm install --dry-run --skip-checks)",
				"CRD %s: absent, and osm upgrade does not create CRDs", want.Name)
			continue
		}
		if apierrors.IsNotFound(err) {
			r.pass(catCRDs, "CRD %s: absent, osm install creates it", want.Name)
			continue
		}
		if apierrors.IsForbidden(err) {
			r.fail(catCRDs, "ask for get on customresourcedefinitions.apiextensions.k8s.io, or run osm "+mode.String()+" as a cluster admin", "CRD %s: may not read it: %v", want.Name, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("CRD %s: %w", want.Name, err)
		}
		var live apiextv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &live); err != nil {
			return fmt.Errorf("CRD %s: %w", want.Name, err)
		}
		if owner := live.Labels[partOfLabel]; owner != want.Labels[partOfLabel] {
			r.fail(catCRDs, fmt.Sprintf("another SMI implementation may use it: remove it (kubectl delete crd %s deletes every object of it) or the other mesh first", want.Name),
				"CRD %s: exists and is not this chart's (label %s=%q, want %q)", want.Name, partOfLabel, owner, want.Labels[partOfLabel])
			continue
		}
		wv, lv := crdVersions(&want), crdVersions(&live)
		if !slices.Equal(wv, lv) {
			r.fail(catCRDs, fmt.Sprintf("Helm does not update CRDs: apply the chart's (kubectl apply -f deploy/charts/osm/crds/) once no stored object needs the other versions (status.storedVersions: %s)", strings.Join(live.Status.StoredVersions, ", ")),
				"CRD %s: versions %s in the cluster, the chart's are %s", want.Name, strings.Join(lv, ", "), strings.Join(wv, ", "))
			continue
		}
		r.pass(catCRDs, "CRD %s: this chart's, versions %s", want.Name, strings.Join(wv, ", "))
	}
	return nil
}

// crdVersions are a CRD's served versions, the storage one marked with *.
func crdVersions(c *apiextv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range c.Spec.Versions {
		if !v.Served {
			continue
		}
		s := v.Name
		if v.Storage {
			s += "*"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
