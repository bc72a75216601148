package command

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/cli/osm/internal/chart"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/layout"
)

type bugReportOptions struct {
	file     string
	meshName string
}

func bugReportCommand(g *globals) *cobra.Command {
	var o bugReportOptions
	cmd := &cobra.Command{
		Use:   "bug-report",
		Short: "Write a tarball of the mesh's state, without secrets, for a bug report",
		Long: `bug-report collects what a maintainer needs to look into a problem with the
mesh in --namespace into one gzipped tar (--output, default
osm-bug-report-<UTC time>.tar.gz in the current directory), under one
directory of the same name:

  README.txt      what each file is, its size and what the scrub removed
  errors.txt      each part that could not be collected, and why
  versions.yaml   osm's and each component's version (osm version), and
                  the version each process reports in its /metrics
  verify.txt      osm verify's output, whole, even when checks fail
  namespaces.txt  the mesh's namespaces (label openservicemesh.io/monitored-by)
  control-plane/  the pods, Deployments, StatefulSets and Services of
                  --namespace as YAML, and its Secrets' names, types and
                  keys (never their data)
  policies/       every object of the chart's CRDs (SMI policies, OSM's
                  such as Retry, the MeshConfig) in the mesh's namespaces as
                  YAML, each SMI or OSM policy's verdict (status.txt: the
                  smi-watcher's rejection at its current generation) and
                  the Events on them
  events/         the Events of --namespace and of each mesh namespace
  metrics/        each component's /metrics that osm reaches, and NATS's
                  /varz and /jsz (monitoring, no credentials)
  proxies/        each xds-edge's /v1/edge, /v1/proxies and /v1/generations,
                  and proxies.txt (osm proxy list)

A part that fails does not stop the others: its error goes into errors.txt
and the rest is written. The exit code is non-zero only when the tarball
could not be written.

No secrets: bug-report never reads a Secret's data, and the operator token
and certificate it uses stay in memory. Every file passes a scrub before it
is added: PEM private keys, base64 of PEM or DER private keys, JWTs (such
as ServiceAccount tokens), passwords in URLs, Authorization headers, and
the value of every field, annotation and environment variable whose name
ends in password, token, secret, credentials, api-key or private-key. The
README counts the redactions. Check the file before you share it: object
names, Events and metrics stay.

bug-report writes a file: it has no -o output format, unlike the read
commands. It reaches the components as osm verify does (see osm verify
--help): the edges' debug API with the operator certificate, the
components' admin /metrics and NATS's monitoring without credentials; on a
cluster through port-forwards, against the dev stack through its context
file (--osm-context, $OSM_CONTEXT).`,
		Example: `  # after osm install, in the current directory
  osm bug-report

  # to a file of your choice, for the mesh of another namespace
  osm bug-report -n osm-prod --output /tmp/osm-prod-report.tar.gz

  # look before you share
  tar -tzvf osm-bug-report-*.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := newBugReport(time.Now().UTC())
			path := cmp.Or(o.file, r.dir+".tar.gz")
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s exists: remove it, or name another file with --output", path)
			}
			r.collect(cmd, g, o)
			size, err := r.write(path)
			if err != nil {
				return fmt.Errorf("write the bug report %s: %w", path, err)
			}
			r.printSummary(g.streams.Out, path, size, g.colour())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "output", "f", "", "the tarball to write (default osm-bug-report-<UTC time>.tar.gz in the current directory); it must not exist")
	f.StringVar(&o.meshName, "mesh-name", "", "the mesh's name, which its namespaces' label openservicemesh.io/monitored-by carries (default: global.meshName of the release in --namespace, else "+defaultMeshName+")")
	_ = cmd.MarkFlagFilename("output", "tar.gz", "tgz")
	return cmd
}

// bugReport is the tarball's content as it is collected: every file
// already scrubbed.
type bugReport struct {
	now time.Time
	// dir is the tarball's top directory, its default name without
	// .tar.gz.
	dir   string
	files []reportFile
	errs  []partError
	// verifyFailed and verifyChecks are verify's counts, for the summary.
	verifyFailed, verifyChecks int
	// mesh and the namespaces, for the README.
	namespace, mesh string
	meshNS          []string
}

// reportFile is one file of the tarball.
type reportFile struct {
	name string
	data []byte
	// redactions counts what the scrub removed from it, by rule.
	redactions map[string]int
}

// partError is a part of the report that could not be collected.
type partError struct {
	part string
	err  error
}

func newBugReport(now time.Time) *bugReport {
	return &bugReport{now: now, dir: "osm-bug-report-" + now.Format("20060102T150405Z")}
}

// fail records that part could not be collected.
func (r *bugReport) fail(part string, err error) {
	r.errs = append(r.errs, partError{part, err})
}

// add scrubs data and adds it as name.
func (r *bugReport) add(name string, data []byte) {
	s := newScrubber()
	r.files = append(r.files, reportFile{name: name, data: s.text(data), redactions: s.counts})
}

// addObjects adds objects as a YAML list, each scrubbed as an object
// (managedFields out, the values of fields named like a secret redacted),
// then as text.
func (r *bugReport) addObjects(name string, objs []map[string]any) {
	s := newScrubber()
	for _, o := range objs {
		s.scrubObject(o)
	}
	if objs == nil {
		objs = []map[string]any{}
	}
	b, err := yaml.Marshal(objs)
	if err != nil {
		r.fail(name, err)
		return
	}
	r.files = append(r.files, reportFile{name: name, data: s.text(b), redactions: s.counts})
}

// addJSON adds v as indented JSON.
func (r *bugReport) addJSON(name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		r.fail(name, err)
		return
	}
	r.add(name, append(b, '\n'))
}

// addYAML adds v as YAML.
func (r *bugReport) addYAML(name string, v any) {
	b, err := yaml.Marshal(v)
	if err != nil {
		r.fail(name, err)
		return
	}
	r.add(name, b)
}

// collect gathers every part; a part's failure is recorded and the others
// go on.
func (r *bugReport) collect(cmd *cobra.Command, g *globals, o bugReportOptions) {
	ctx := cmd.Context()
	client, cs, err := g.meshAccess(cmd)
	r.namespace = g.namespace
	if err != nil {
		r.fail("cluster", err)
		r.addYAML("versions.yaml", versions{Client: thisVersion()})
		return
	}
	defer client.Close()
	dyn, err := g.dynamic()
	if err != nil {
		r.fail("cluster", err)
		return
	}
	r.mesh = o.meshName
	if r.mesh == "" {
		if r.mesh, _, err = g.meshNames(); err != nil {
			r.fail("mesh name", fmt.Errorf("%w; using %s", err, defaultMeshName))
			r.mesh = defaultMeshName
		}
	}
	// The metrics first: their target_info says what each process runs.
	running := r.metrics(ctx, client)
	r.versions(ctx, cs, running)
	r.verify(ctx, g, cs, dyn, client)
	r.namespaces(ctx, cs)
	r.controlPlane(ctx, cs, dyn)
	events := r.events(ctx, cs)
	r.policies(ctx, dyn, events)
	r.proxies(ctx, cs, client)
}

// reportVersions is versions.yaml: osm version's answer and what the
// components' processes say they run.
type reportVersions struct {
	versions
	// Running are the versions the processes report in their /metrics
	// (target_info's service_version), which the dev stack's processes
	// have too.
	Running []runningVersion `json:"running,omitempty"`
}

// runningVersion is one process's target_info.
type runningVersion struct {
	// Endpoint names the pod (or the context file's name) of the admin
	// listener.
	Endpoint string `json:"endpoint"`
	Service  string `json:"service"`
	Version  string `json:"version"`
}

func (r *bugReport) versions(ctx context.Context, cs kubernetes.Interface, running []runningVersion) {
	v, err := clusterVersions(ctx, cs, r.namespace)
	if err != nil {
		r.fail("versions", err)
	}
	r.addYAML("versions.yaml", reportVersions{versions: v, Running: running})
}

var promLabelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// targetInfo reads service_name and service_version from the target_info
// sample of a /metrics body (OpenTelemetry's resource).
func targetInfo(endpoint string, body []byte) (runningVersion, bool) {
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, "target_info{") {
			continue
		}
		rv := runningVersion{Endpoint: endpoint}
		for _, m := range promLabelRE.FindAllStringSubmatch(l, -1) {
			switch m[1] {
			case "service_name":
				rv.Service = m[2]
			case "service_version":
				rv.Version = m[2]
			}
		}
		return rv, rv.Service != "" || rv.Version != ""
	}
	return runningVersion{}, false
}

// verify runs osm verify's checks and keeps its table, whole, even when a
// check fails or verify stops.
func (r *bugReport) verify(ctx context.Context, g *globals, cs kubernetes.Interface, dyn dynamic.Interface, client *access.Client) {
	v := newVerifier(g, verifyOptions{output: "table", expiryWarning: defaultExpiryWarning}, cs, dyn, client)
	_, err := v.run(ctx)
	var b bytes.Buffer
	if perr := v.r.print(&b, "table", painter(false)); perr != nil {
		err = errors.Join(err, perr)
	}
	if err != nil {
		fmt.Fprintf(&b, "\nverify stopped: %v\n", err)
		r.fail("verify", err)
	}
	r.verifyFailed, r.verifyChecks = v.r.Failed, len(v.r.Results)
	r.add("verify.txt", b.Bytes())
}

// namespaces lists the mesh's namespaces.
func (r *bugReport) namespaces(ctx context.Context, cs kubernetes.Interface) {
	sel := layout.LabelMonitoredBy + "=" + r.mesh
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		r.fail("namespaces", fmt.Errorf("list the namespaces of mesh %s (label %s): %w", r.mesh, sel, err))
		return
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tIGNORED\tCREATED")
	for _, n := range list.Items {
		r.meshNS = append(r.meshNS, n.Name)
		fmt.Fprintf(tw, "%s\t%v\t%s\n", n.Name, n.Labels[layout.LabelIgnore] == "true", n.CreationTimestamp.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	sort.Strings(r.meshNS)
	fmt.Fprintf(&b, "\n%d namespace(s) labelled %s\n", len(list.Items), sel)
	r.add("namespaces.txt", b.Bytes())
}

// The control plane's objects bug-report reads.
var controlPlaneKinds = []struct {
	file string
	gvr  schema.GroupVersionResource
}{
	{"pods.yaml", schema.GroupVersionResource{Version: "v1", Resource: "pods"}},
	{"deployments.yaml", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}},
	{"statefulsets.yaml", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}},
	{"services.yaml", schema.GroupVersionResource{Version: "v1", Resource: "services"}},
}

// controlPlane: the control-plane namespace's workloads and Services as
// YAML, and its Secrets without their data.
func (r *bugReport) controlPlane(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) {
	for _, k := range controlPlaneKinds {
		list, err := dyn.Resource(k.gvr).Namespace(r.namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.fail("control-plane/"+k.file, fmt.Errorf("list the %s of namespace %s: %w", k.gvr.Resource, r.namespace, err))
			continue
		}
		objs := make([]map[string]any, 0, len(list.Items))
		for _, u := range list.Items {
			objs = append(objs, u.Object)
		}
		r.addObjects("control-plane/"+k.file, objs)
	}
	secrets, err := cs.CoreV1().Secrets(r.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		r.fail("control-plane/secrets.txt", fmt.Errorf("list the Secrets of namespace %s: %w", r.namespace, err))
		return
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tKEYS\tCREATED")
	for _, s := range secrets.Items {
		keys := make([]string, 0, len(s.Data))
		for k := range s.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Type, cmpOr(strings.Join(keys, ","), "-"), s.CreationTimestamp.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	fmt.Fprintln(&b, "\nThe Secrets' names and keys only: bug-report never writes their data.")
	r.add("control-plane/secrets.txt", b.Bytes())
}

// reportEvent is an Event as the bug-report writes it.
type reportEvent struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Object  string    `json:"object"`
	Source  string    `json:"source,omitempty"`
	Count   int32     `json:"count,omitempty"`
	Message string    `json:"message"`
}

func toReportEvent(e corev1.Event) reportEvent {
	o := e.InvolvedObject
	obj := o.Kind + " " + o.Name
	if o.Namespace != "" {
		obj = o.Kind + " " + o.Namespace + "/" + o.Name
	}
	return reportEvent{Time: eventTime(e).UTC(), Type: e.Type, Reason: e.Reason, Object: obj,
		Source: cmp.Or(e.ReportingController, e.Source.Component), Count: e.Count, Message: e.Message}
}

// events writes the Events of the control-plane namespace and of each mesh
// namespace, oldest first, and returns them all.
func (r *bugReport) events(ctx context.Context, cs kubernetes.Interface) []corev1.Event {
	var all []corev1.Event
	for _, ns := range append([]string{r.namespace}, r.meshNS...) {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.fail("events/"+ns+".yaml", fmt.Errorf("list the Events of namespace %s: %w", ns, err))
			continue
		}
		all = append(all, list.Items...)
		r.addYAML("events/"+fileName(ns)+".yaml", sortedEvents(list.Items))
	}
	return all
}

func sortedEvents(evs []corev1.Event) []reportEvent {
	out := make([]reportEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, toReportEvent(e))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// policies writes every object of the chart's CRDs in the control-plane
// and mesh namespaces, the Events on them, and each policy's verdict.
func (r *bugReport) policies(ctx context.Context, dyn dynamic.Interface, events []corev1.Event) {
	c, err := chart.Load()
	if err != nil {
		r.fail("policies", err)
		return
	}
	inMesh := map[string]bool{r.namespace: true}
	for _, ns := range r.meshNS {
		inMesh[ns] = true
	}
	groups := map[string]bool{}
	rejections := newestRejections(events)
	var status bytes.Buffer
	tw := tabwriter.NewWriter(&status, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "KIND\tOBJECT\tGENERATION\tSTATUS\tREASON")
	for _, f := range c.CRDObjects() {
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.Unmarshal(f.File.Data, &crd); err != nil {
			r.fail("policies", fmt.Errorf("chart CRD %s: %w", f.Filename, err))
			continue
		}
		groups[crd.Spec.Group] = true
		gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: storageVersion(&crd), Resource: crd.Spec.Names.Plural}
		file := "policies/" + crd.Spec.Names.Plural + "." + crd.Spec.Group + ".yaml"
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.fail(file, fmt.Errorf("list the %s: %w", crd.Name, err))
			continue
		}
		var objs []map[string]any
		for _, u := range list.Items {
			if !inMesh[u.GetNamespace()] {
				continue
			}
			objs = append(objs, u.Object)
			verdict, reason := "-", ""
			if slices.Contains(policyGroups, crd.Spec.Group) {
				verdict = "accepted (no rejection recorded)"
				if e, ok := rejections[policyKey{u.GetKind(), u.GetNamespace(), u.GetName()}]; ok {
					if g, ok := eventGeneration(e.Message); !ok || g == u.GetGeneration() {
						verdict, reason = "rejected", e.Reason+": "+oneLine(e.Message)
					}
				}
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%s\t%s\n", u.GetKind(), u.GetNamespace(), u.GetName(), u.GetGeneration(), verdict, cmpOr(reason, "-"))
		}
		r.addObjects(file, objs)
	}
	_ = tw.Flush()
	fmt.Fprintln(&status, "\nA policy is rejected when the smi-watcher's newest Warning Event on it is for its current generation (osm verify's policies check).")
	r.add("policies/status.txt", status.Bytes())
	var onPolicies []corev1.Event
	for _, e := range events {
		gv, _ := schema.ParseGroupVersion(e.InvolvedObject.APIVersion)
		if groups[gv.Group] {
			onPolicies = append(onPolicies, e)
		}
	}
	r.addYAML("policies/events.yaml", sortedEvents(onPolicies))
}

// storageVersion is the CRD's storage version, else its first served one.
func storageVersion(c *apiextv1.CustomResourceDefinition) string {
	for _, v := range c.Spec.Versions {
		if v.Storage {
			return v.Name
		}
	}
	for _, v := range c.Spec.Versions {
		if v.Served {
			return v.Name
		}
	}
	return ""
}

// metrics snapshots each component's /metrics and NATS's /varz and /jsz,
// and returns what the components say they run.
func (r *bugReport) metrics(ctx context.Context, client *access.Client) []runningVersion {
	mon, ok := client.Monitors()
	if !ok {
		r.fail("metrics", errors.New("this osm cannot find the components' admin listeners"))
		return nil
	}
	var running []runningVersion
	admins, err := mon.Admins(ctx)
	if err != nil {
		r.fail("metrics", err)
	}
	for _, ep := range admins {
		b, err := getBody(ctx, "http://"+ep.Addr+"/metrics")
		if err != nil {
			r.fail("metrics/"+ep.Name+".prom", fmt.Errorf("%s at %s: %w", ep.Name, ep.Addr, err))
			continue
		}
		r.add("metrics/"+fileName(ep.Name)+".prom", b)
		if rv, ok := targetInfo(ep.Name, b); ok {
			running = append(running, rv)
		}
	}
	nats, err := mon.NATSMonitors(ctx)
	if err != nil {
		r.fail("metrics/nats", err)
	}
	for _, ep := range nats {
		for _, q := range []struct{ file, path string }{{"varz", "/varz"}, {"jsz", "/jsz?accounts=true&streams=true&config=true"}} {
			b, err := getBody(ctx, "http://"+ep.Addr+q.path)
			if err != nil {
				r.fail("metrics/"+ep.Name+"."+q.file+".json", fmt.Errorf("NATS server %s at %s: %w", ep.Name, ep.Addr, err))
				continue
			}
			r.add("metrics/"+fileName(ep.Name)+"."+q.file+".json", b)
		}
	}
	return running
}

// proxies writes each edge's state, proxies and generations, and the
// table of osm proxy list.
func (r *bugReport) proxies(ctx context.Context, cs kubernetes.Interface, client *access.Client) {
	edges, err := client.Edges(ctx)
	if err != nil {
		r.fail("proxies", err)
		return
	}
	var lists []edgedebug.ProxyList
	for _, e := range edges {
		dir := "proxies/" + fileName(e.Name) + "/"
		var st edgedebug.EdgeStatus
		if err := e.Get(ctx, edgedebug.PathEdge, &st); err != nil {
			r.fail(dir+"edge.json", err)
		} else {
			r.addJSON(dir+"edge.json", st)
		}
		var l edgedebug.ProxyList
		if err := e.Get(ctx, edgedebug.PathProxies, &l); err != nil {
			r.fail(dir+"proxies.json", err)
		} else {
			lists = append(lists, l)
			r.addJSON(dir+"proxies.json", l)
		}
		var gens edgedebug.Generations
		if err := e.Get(ctx, edgedebug.PathGenerations, &gens); err != nil {
			r.fail(dir+"generations.json", err)
		} else {
			r.addJSON(dir+"generations.json", gens)
		}
		e.Close()
	}
	pods, err := meshedPods(ctx, cs, "")
	if err != nil {
		r.fail("proxies/proxies.txt", fmt.Errorf("%w; the POD column is empty", err))
	}
	var b bytes.Buffer
	if err := proxyTable(proxyRows(lists, pods)).print(&b, "table"); err != nil {
		r.fail("proxies/proxies.txt", err)
		return
	}
	r.add("proxies/proxies.txt", b.Bytes())
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// fileName makes a pod or namespace name safe as a file name.
func fileName(s string) string {
	return cmpOr(unsafeFileChars.ReplaceAllString(s, "_"), "_")
}

// oneLine joins a message's lines.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
