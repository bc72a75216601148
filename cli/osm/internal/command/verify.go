package command

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/cli/osm/internal/chart"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/libs/policy"
)

// The categories of osm verify, in the order they run.
const (
	catComponents = "control plane"
	catVerifyCRDs = "custom resource definitions"
	catNATS       = "nats"
	catTrust      = "certificates"
	catWebhooks   = "webhooks"
	catEdges      = "xds-edges"
	catPolicies   = "policies"
)

// The labels the chart puts on its workloads.
const (
	labelInstance  = "app.kubernetes.io/instance"
	labelVersion   = "app.kubernetes.io/version"
	labelComponent = "app.kubernetes.io/component"
)

// watcherEventSource is the smi-watcher's Event source: it records each
// rejection by the policy-compiler as a Warning Event on the object.
const watcherEventSource = "osm-smi-watcher"

// The KV buckets of the mesh (libs/bus), as NATS names their streams.
var meshBuckets = []string{"mesh-compiled", "mesh-leases", "mesh-observed", "mesh-trust"}

type verifyOptions struct {
	output        string
	expiryWarning time.Duration
}

func verifyCommand(g *globals) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that the installed mesh works, as linkerd check does",
		Long: `verify checks the installed mesh in --namespace, and prints ✔ or ✘ with a hint
for each check; the exit code is non-zero when any check fails.

  control plane    every Deployment and StatefulSet of the release is ready and
                   rolled out; its version (label app.kubernetes.io/version),
                   and no skew between the components' versions;
  custom resource  each CRD of the chart is present, Established, and serves
  definitions      the chart's versions;
  nats             each NATS server answers its monitoring endpoint with
                   JetStream on, and each of the mesh's KV buckets exists with
                   as many replicas as there are NATS servers;
  certificates     the cert-authority answers (it issues the operator
                   certificate below); its trust bundle's roots and the
                   signing chain, and the nearest expiry, which fails within
                   --expiry-warning;
  webhooks         each webhook configuration calling a Service in --namespace
                   has the trust bundle's roots as its caBundle;
  xds-edges        each edge serves the latest generation: the newest the
                   policy-compilers committed (osm_compiler_generation) or
                   another edge serves;
  policies         the policies the compiler rejects now (its
                   osm_compiler_rejected_policies) and, for each, the reason
                   the smi-watcher recorded as a Warning Event on it (a
                   Service without a selector and without
                   openservicemesh.io/service-accounts counts too).

How it reaches the components: as osm proxy does (see osm proxy --help), through
the Kubernetes API with port-forwards to the pods, or at the addresses of the
dev stack's context file (--osm-context, $OSM_CONTEXT). The edges' debug API
needs the operator certificate (a token of ServiceAccount osm-operator
exchanged at the cert-authority). The compilers' /metrics and NATS's
monitoring endpoint serve no secret and need none: verify holds no NATS
credentials at all. What you need: get and list on the release's objects,
events and the CRDs; create on pods/portforward in --namespace; and the
chart's Role osm-operator-token.

Colour only on a terminal (NO_COLOR turns it off).`,
		Example: `  # after osm install
  osm verify

  # against the dev stack (make run), as JSON
  OSM_CONTEXT=.osm-dev/osm-context.json osm verify -o json

  # fail when a root or the signing chain expires within 90 days
  osm verify --expiry-warning 2160h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output); err != nil {
				return err
			}
			if o.expiryWarning < 0 {
				return fmt.Errorf("--expiry-warning %s: must not be negative", o.expiryWarning)
			}
			client, cs, err := g.meshAccess(cmd)
			if err != nil {
				return err
			}
			defer client.Close()
			dyn, err := g.dynamic()
			if err != nil {
				return err
			}
			v := newVerifier(g, o, cs, dyn, client)
			r, err := v.run(cmd.Context())
			if err != nil {
				return err
			}
			if err := r.print(g.streams.Out, o.output, g.colour()); err != nil {
				return err
			}
			return r.err("verify")
		},
	}
	addOutputFlag(cmd, &o.output)
	cmd.Flags().DurationVar(&o.expiryWarning, "expiry-warning", defaultExpiryWarning, "fail the certificates check when a root or the signing chain expires within this")
	return cmd
}

// verifier runs osm verify's checks.
type verifier struct {
	g      *globals
	o      verifyOptions
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	client *access.Client
	// processes: the components run as processes (a context file), not
	// as the release's workloads.
	processes bool
	now       time.Time

	r report
	// what the checks learn for the later ones
	operator  *caclient.Issued
	compilers []compilerMetrics
	mapper    meta.RESTMapper // resourceOf's, from discovery
}

// newVerifier is a verifier of the mesh that client reaches.
func newVerifier(g *globals, o verifyOptions, cs kubernetes.Interface, dyn dynamic.Interface, client *access.Client) *verifier {
	return &verifier{g: g, o: o, cs: cs, dyn: dyn, client: client, processes: g.osmContextPath() != "", now: time.Now()}
}

// defaultExpiryWarning is --expiry-warning's default.
const defaultExpiryWarning = 30 * 24 * time.Hour

// compilerMetrics is what a policy-compiler's /metrics says.
type compilerMetrics struct {
	name                 string
	generation, rejected int64
	hasGeneration        bool
}

func (v *verifier) run(ctx context.Context) (*report, error) {
	if err := v.components(ctx); err != nil {
		return nil, err
	}
	if err := v.crds(ctx); err != nil {
		return nil, err
	}
	v.nats(ctx)
	v.trust(ctx)
	if err := v.webhooks(ctx); err != nil {
		return nil, err
	}
	v.readCompilers(ctx)
	v.edges(ctx)
	if err := v.policies(ctx); err != nil {
		return nil, err
	}
	return &v.r, nil
}

// osmContextPath is the context file in use, if any.
func (g *globals) osmContextPath() string {
	if g.osmContext != "" {
		return g.osmContext
	}
	return os.Getenv(osmctx.EnvVar)
}

// components: every workload of the release ready, its version, no skew.
func (v *verifier) components(ctx context.Context) error {
	ns := v.g.namespace
	comps, err := components(ctx, v.cs, ns, ReleaseName)
	if err != nil {
		return err
	}
	if len(comps) == 0 {
		if v.processes {
			v.r.pass(catComponents, "no Deployment or StatefulSet of release %s in namespace %s: the components run as processes (the context file's); the checks below reach each one", ReleaseName, ns)
			return nil
		}
		v.r.fail(catComponents, fmt.Sprintf("install the mesh (osm install), or set --namespace to where it is installed (kubectl get deployments -A -l %s=%s)", labelInstance, ReleaseName),
			"no Deployment or StatefulSet of release %s in namespace %s", ReleaseName, ns)
		return nil
	}
	versions, err := componentVersions(ctx, v.cs, ns)
	if err != nil {
		return err
	}
	byVersion := map[string][]string{}
	for _, c := range comps {
		ver := versions[c.key()]
		if ver.osm {
			byVersion[ver.version] = append(byVersion[ver.version], c.name)
		}
		if c.done() {
			v.r.pass(catComponents, "%s: %s, version %s", c.key(), c.state(), cmpOr(ver.version, "unlabelled"))
			continue
		}
		v.r.fail(catComponents, fmt.Sprintf("kubectl describe %s -n %s %s; kubectl get pods -n %s -l %s=%s", strings.ToLower(c.kind), ns, c.name, ns, labelInstance, ReleaseName),
			"%s: %s, version %s", c.key(), c.state(), cmpOr(ver.version, "unlabelled"))
	}
	mine := ""
	if c, err := chart.Load(); err == nil {
		mine = c.Metadata.AppVersion
	}
	switch len(byVersion) {
	case 0:
	case 1:
		for ver := range byVersion {
			v.r.pass(catComponents, "no version skew: every component runs %s (this osm's chart: %s)", ver, mine)
		}
	default:
		var parts []string
		for _, ver := range slices.Sorted(maps.Keys(byVersion)) {
			parts = append(parts, fmt.Sprintf("%s (%s)", ver, strings.Join(byVersion[ver], ", ")))
		}
		v.r.fail(catComponents, "an upgrade is under way or stopped half-way: finish it with osm upgrade --reuse-values (this osm's chart: "+mine+")",
			"version skew: the components run %s", strings.Join(parts, ", "))
	}
	return nil
}

type componentVersion struct {
	version string
	osm     bool // an OSM component, not NATS
}

// osmComponent: a workload of OSM's own images, which share a version (not
// NATS, which has its own).
func osmComponent(l map[string]string) bool {
	return l[labelComponent] != "" && l[labelComponent] != "nats"
}

// componentVersions are the pod template's version label of each workload
// of the release, by component key.
func componentVersions(ctx context.Context, cs kubernetes.Interface, ns string) (map[string]componentVersion, error) {
	sel := metav1.ListOptions{LabelSelector: labelInstance + "=" + ReleaseName}
	out := map[string]componentVersion{}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the Deployments in namespace %s: %w", ns, err)
	}
	for _, d := range deps.Items {
		l := d.Spec.Template.Labels
		out[component{kind: "Deployment", name: d.Name}.key()] = componentVersion{l[labelVersion], osmComponent(l)}
	}
	sets, err := cs.AppsV1().StatefulSets(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the StatefulSets in namespace %s: %w", ns, err)
	}
	for _, s := range sets.Items {
		l := s.Spec.Template.Labels
		out[component{kind: "StatefulSet", name: s.Name}.key()] = componentVersion{l[labelVersion], osmComponent(l)}
	}
	return out, nil
}

// crds: each CRD of the chart present, Established, with its versions.
func (v *verifier) crds(ctx context.Context) error {
	c, err := chart.Load()
	if err != nil {
		return err
	}
	for _, f := range c.CRDObjects() {
		var want apiextv1.CustomResourceDefinition
		if err := yaml.Unmarshal(f.File.Data, &want); err != nil {
			return fmt.Errorf("chart CRD %s: %w", f.Filename, err)
		}
		u, err := v.dyn.Resource(crdGVR).Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			v.r.fail(catVerifyCRDs, "Helm creates CRDs only at install and never again: apply the chart's (kubectl apply -f deploy/charts/osm/crds/, or the CustomResourceDefinitions of osm install --dry-run); the smi-watcher is not ready until it can list "+want.Spec.Names.Plural,
				"CRD %s is missing", want.Name)
			continue
		}
		if err != nil {
			return fmt.Errorf("CRD %s: %w", want.Name, err)
		}
		var live apiextv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &live); err != nil {
			return fmt.Errorf("CRD %s: %w", want.Name, err)
		}
		established := false
		for _, cond := range live.Status.Conditions {
			if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
				established = true
			}
		}
		wv, lv := crdVersions(&want), crdVersions(&live)
		switch {
		case !established:
			v.r.fail(catVerifyCRDs, "kubectl describe crd "+want.Name+" (its conditions say why)", "CRD %s is not Established", want.Name)
		case !slices.Equal(wv, lv):
			v.r.fail(catVerifyCRDs, "apply the chart's CRDs (kubectl apply -f deploy/charts/osm/crds/)",
				"CRD %s serves %s, the chart's are %s", want.Name, strings.Join(lv, ", "), strings.Join(wv, ", "))
		default:
			v.r.pass(catVerifyCRDs, "CRD %s is Established, versions %s", want.Name, strings.Join(wv, ", "))
		}
	}
	return nil
}

// trust: the cert-authority issues the operator certificate; the bundle's
// roots and the signing chain, and the nearest expiry.
func (v *verifier) trust(ctx context.Context) {
	issued, err := v.client.Operator(ctx)
	if err != nil {
		v.r.fail(catTrust, fmt.Sprintf("kubectl get pods -n %[1]s -l app.kubernetes.io/name=osm-cert-authority; kubectl logs -n %[1]s deploy/osm-cert-authority", v.g.namespace),
			"the cert-authority does not issue the operator certificate: %v", err)
		return
	}
	v.operator = issued
	v.r.pass(catTrust, "the cert-authority issues the operator certificate")
	type cert struct {
		what     string
		notAfter time.Time
	}
	var certs []cert
	for _, root := range issued.Bundle.GetRoots() {
		c, err := parsePEMCert(root.GetCertificatePem())
		if err != nil {
			v.r.fail(catTrust, "", "trust bundle root %s: %v", root.GetId(), err)
			continue
		}
		what := "root " + c.Subject.CommonName
		if root.GetSigning() {
			what += " (signing)"
		}
		certs = append(certs, cert{what, c.NotAfter})
	}
	// The chain above the 15-minute leaf: the intermediates that sign
	// every certificate of the mesh.
	for _, der := range issued.Pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil && !isSelfSigned(c) {
			certs = append(certs, cert{"intermediate " + c.Subject.CommonName, c.NotAfter})
		}
	}
	if len(certs) == 0 {
		v.r.fail(catTrust, "", "the trust bundle holds no root")
		return
	}
	v.r.pass(catTrust, "trust bundle: %d root(s)", len(issued.Bundle.GetRoots()))
	sort.Slice(certs, func(i, j int) bool { return certs[i].notAfter.Before(certs[j].notAfter) })
	near := certs[0]
	left := near.notAfter.Sub(v.now)
	if left < v.o.expiryWarning {
		v.r.fail(catTrust, "rotate the root (the chart README's root rotation), or renew the intermediate at the CA's provider",
			"nearest expiry: %s, %s, in %s (under --expiry-warning %s)", near.what, near.notAfter.UTC().Format(time.RFC3339), days(left), days(v.o.expiryWarning))
		return
	}
	v.r.pass(catTrust, "nearest expiry: %s, %s, in %s", near.what, near.notAfter.UTC().Format(time.RFC3339), days(left))
}

// webhooks: each webhook calling a Service in the namespace has the
// bundle's roots as its caBundle.
func (v *verifier) webhooks(ctx context.Context) error {
	ns := v.g.namespace
	type hook struct {
		config, name string
		caBundle     []byte
	}
	var hooks []hook
	mw, err := v.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list MutatingWebhookConfigurations: %w", err)
	}
	for _, c := range mw.Items {
		for _, w := range c.Webhooks {
			if s := w.ClientConfig.Service; s != nil && s.Namespace == ns {
				hooks = append(hooks, hook{"MutatingWebhookConfiguration " + c.Name, w.Name, w.ClientConfig.CABundle})
			}
		}
	}
	vw, err := v.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list ValidatingWebhookConfigurations: %w", err)
	}
	for _, c := range vw.Items {
		for _, w := range c.Webhooks {
			if s := w.ClientConfig.Service; s != nil && s.Namespace == ns {
				hooks = append(hooks, hook{"ValidatingWebhookConfiguration " + c.Name, w.Name, w.ClientConfig.CABundle})
			}
		}
	}
	if len(hooks) == 0 {
		v.r.fail(catWebhooks, "the chart creates the injector's: osm upgrade --reuse-values recreates it", "no webhook configuration calls a Service in namespace %s", ns)
		return nil
	}
	if v.operator == nil {
		v.r.fail(catWebhooks, "fix the cert-authority first", "the webhooks' caBundle: not checked, the trust bundle comes from the cert-authority")
		return nil
	}
	want := map[string]string{} // fingerprint → subject
	for _, root := range v.operator.Bundle.GetRoots() {
		if c, err := parsePEMCert(root.GetCertificatePem()); err == nil {
			want[fingerprint(c)] = c.Subject.CommonName
		}
	}
	hint := fmt.Sprintf("the injector rewrites it on start and on each bundle change: check it runs and is ready (kubectl get pods -n %[1]s -l app.kubernetes.io/name=osm-injector-webhook; kubectl logs -n %[1]s deploy/osm-injector-webhook); until then the apiserver cannot verify the webhook's certificate", ns)
	for _, h := range hooks {
		got := map[string]string{}
		rest := h.caBundle
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if c, err := x509.ParseCertificate(b.Bytes); err == nil {
				got[fingerprint(c)] = c.Subject.CommonName
			}
		}
		var missing, extra []string
		for fp, cn := range want {
			if _, ok := got[fp]; !ok {
				missing = append(missing, cn+" "+fp[:16])
			}
		}
		for fp, cn := range got {
			if _, ok := want[fp]; !ok {
				extra = append(extra, cn+" "+fp[:16])
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		switch {
		case len(got) == 0:
			v.r.fail(catWebhooks, hint, "%s webhook %s: caBundle is empty", h.config, h.name)
		case len(missing) > 0 || len(extra) > 0:
			v.r.fail(catWebhooks, hint, "%s webhook %s: caBundle is stale: lacks the bundle's %s; holds %s, not in the bundle",
				h.config, h.name, listOrNone(missing), listOrNone(extra))
		default:
			v.r.pass(catWebhooks, "%s webhook %s: caBundle is the trust bundle's %d root(s)", h.config, h.name, len(want))
		}
	}
	return nil
}

// readCompilers reads each policy-compiler's generation and rejections
// from its /metrics; the edges and policies checks use them.
func (v *verifier) readCompilers(ctx context.Context) {
	mon, ok := v.client.Monitors()
	if !ok {
		return
	}
	eps, err := mon.Compilers(ctx)
	if err != nil {
		v.r.fail(catEdges, "the latest generation is what the active policy-compiler committed: check the compilers run", "the policy-compilers: %v", err)
		return
	}
	for _, ep := range eps {
		m, err := readCompilerMetrics(ctx, ep)
		if err != nil {
			v.r.fail(catEdges, fmt.Sprintf("kubectl logs -n %s %s", v.g.namespace, ep.Name), "policy-compiler %s: %v", ep.Name, err)
			continue
		}
		v.compilers = append(v.compilers, m)
	}
}

// edges: each edge serves the latest generation.
func (v *verifier) edges(ctx context.Context) {
	if v.operator == nil {
		v.r.fail(catEdges, "fix the cert-authority first", "the edges: not checked, their debug API needs the operator certificate from the cert-authority")
		return
	}
	edges, err := v.client.Edges(ctx)
	if err != nil {
		v.r.fail(catEdges, "", "the edges: %v", err)
		return
	}
	type state struct {
		name string
		st   edgedebug.EdgeStatus
	}
	var states []state
	for _, e := range edges {
		var st edgedebug.EdgeStatus
		err := e.Get(ctx, edgedebug.PathEdge, &st)
		e.Close()
		if err != nil {
			v.r.fail(catEdges, fmt.Sprintf("kubectl logs -n %s %s", v.g.namespace, e.Name), "edge %s: %v", e.Name, err)
			continue
		}
		states = append(states, state{e.Name, st})
	}
	// The latest: the newest an edge serves, or a compiler committed.
	var latest edgedebug.EdgeStatus
	source := ""
	for _, s := range states {
		if s.st.Epoch > latest.Epoch || (s.st.Epoch == latest.Epoch && s.st.Number > latest.Number) {
			latest, source = s.st, "edge "+s.name
		}
	}
	for _, c := range v.compilers {
		// The compiler's metric has no epoch: it counts in the newest.
		if c.hasGeneration && uint64(c.generation) > latest.Number {
			latest.Number, source = uint64(c.generation), "policy-compiler "+c.name
			latest.Generation = strconv.FormatUint(latest.Number, 10)
			if latest.Epoch != 0 {
				latest.Generation = strconv.FormatUint(latest.Epoch, 10) + ":" + latest.Generation
			}
		}
	}
	for _, s := range states {
		if s.st.Epoch == latest.Epoch && s.st.Number == latest.Number {
			v.r.pass(catEdges, "edge %s serves generation %s, the latest", s.name, s.st.Generation)
			continue
		}
		v.r.fail(catEdges, fmt.Sprintf("an edge behind has lost NATS or cannot load the generation: kubectl logs -n %s %s; it turns not ready when it lags, and its proxies move to the other edges", v.g.namespace, s.name),
			"edge %s serves generation %s, behind the latest %s (%s)", s.name, s.st.Generation, latest.Generation, source)
	}
}

// policyGroups are the API groups of the policies the compiler judges:
// SMI's and OSM's policy.openservicemesh.io (Egress, Retry,
// UpstreamTrafficSetting, ...).
var policyGroups = []string{"access.smi-spec.io", "specs.smi-spec.io", "split.smi-spec.io", osmpolicy.GroupVersion.Group}

// policies: the compilers' count of rejected policies, and the reason of
// each from the smi-watcher's Events on the objects.
func (v *verifier) policies(ctx context.Context) error {
	rejected, known := int64(0), false
	for _, c := range v.compilers {
		if c.hasGeneration { // the active compiler
			rejected, known = max(rejected, c.rejected), true
		}
	}
	evs, err := v.cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "type=" + corev1.EventTypeWarning})
	if err != nil {
		return fmt.Errorf("list the Warning Events: %w", err)
	}
	// The newest rejection of each object, at its current generation.
	newest := newestRejections(evs.Items)
	var rows []string
	var hints []string
	for k, e := range newest {
		cur, ok := v.currentGeneration(ctx, e.InvolvedObject)
		if !ok {
			continue // deleted
		}
		if g, ok := eventGeneration(e.Message); ok && g != cur {
			continue // an older generation's verdict
		}
		rows = append(rows, fmt.Sprintf("%s %s/%s is rejected: %s: %s", k.kind, k.ns, k.name, e.Reason, e.Message))
		hints = append(hints, fmt.Sprintf("fix the field named, then kubectl describe %s -n %s %s shows the new verdict", strings.ToLower(k.kind), k.ns, k.name))
	}
	// Sorted together.
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return rows[idx[a]] < rows[idx[b]] })
	switch {
	case known && rejected == 0:
		v.r.pass(catPolicies, "no policy is rejected (the policy-compiler's osm_compiler_rejected_policies is 0)")
		return nil
	case !known && len(rows) == 0:
		v.r.pass(catPolicies, "no policy is rejected (no Warning Event of the smi-watcher on a policy at its current generation; the compilers' count was not read)")
		return nil
	}
	if known {
		v.r.fail(catPolicies, "", "policies rejected by the policy-compiler: %d", rejected)
	}
	for _, i := range idx {
		v.r.fail(catPolicies, hints[i], "%s", rows[i])
	}
	return nil
}

// policyKey names a policy object.
type policyKey struct{ kind, ns, name string }

// newestRejections is the newest of the smi-watcher's rejection Events
// (Warning Events on a policy object) of each object among evs. An object
// whose newest Warning Event is an acceptance with a warning
// (policy.IsWarned: part of it does not take effect for some proxies) is
// not rejected.
func newestRejections(evs []corev1.Event) map[policyKey]corev1.Event {
	newest := map[policyKey]corev1.Event{}
	for _, e := range evs {
		o := e.InvolvedObject
		if e.Type != corev1.EventTypeWarning || (e.Source.Component != watcherEventSource && e.ReportingController != watcherEventSource) {
			continue
		}
		gv, _ := schema.ParseGroupVersion(o.APIVersion)
		// A Service without a selector is judged too (its declared
		// service accounts).
		if !slices.Contains(policyGroups, gv.Group) && (gv.Group != "" || o.Kind != "Service") {
			continue
		}
		k := policyKey{o.Kind, o.Namespace, o.Name}
		if cur, ok := newest[k]; !ok || eventTime(e).After(eventTime(cur)) {
			newest[k] = e
		}
	}
	for k, e := range newest {
		if policy.IsWarned(e.Message) {
			delete(newest, k)
		}
	}
	return newest
}

// currentGeneration is the live object's metadata.generation; false when
// it is gone.
func (v *verifier) currentGeneration(ctx context.Context, ref corev1.ObjectReference) (int64, bool) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return 0, false
	}
	// The served resource of the kind, from the apiserver's discovery: a
	// plural is not always kind + "s" (Egress: egresses, Retry: retries).
	res, err := v.resourceOf(gv.WithKind(ref.Kind))
	if err != nil {
		return 0, true // cannot tell: keep the Event's verdict
	}
	u, err := v.dyn.Resource(res).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return 0, !apierrors.IsNotFound(err)
	}
	return u.GetGeneration(), true
}

// resourceOf maps a kind to its served resource through the apiserver's
// discovery, read once per verifier.
func (v *verifier) resourceOf(gvk schema.GroupVersionKind) (schema.GroupVersionResource, error) {
	if v.mapper == nil {
		groups, err := restmapper.GetAPIGroupResources(v.cs.Discovery())
		if err != nil {
			return schema.GroupVersionResource{}, fmt.Errorf("read the apiserver's API groups: %w", err)
		}
		v.mapper = restmapper.NewDiscoveryRESTMapper(groups)
	}
	m, err := v.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return schema.GroupVersionResource{}, err
	}
	return m.Resource, nil
}

var eventGenerationRE = regexp.MustCompile(`\(generation (\d+)\)$`)

// eventGeneration is the generation the smi-watcher's message names.
func eventGeneration(msg string) (int64, bool) {
	m := eventGenerationRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, false
	}
	g, err := strconv.ParseInt(m[1], 10, 64)
	return g, err == nil
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func parsePEMCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// fingerprint is the hex SHA-256 of the certificate's DER.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// days prints d in whole days, or hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
