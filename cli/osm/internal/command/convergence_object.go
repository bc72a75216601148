package command

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/osmpolicy"
)

// observedKind is a kind the smi-watcher writes into mesh-observed, with
// the names kubectl knows it by.
type observedKind struct {
	key        string // libs/layout kind key
	names      []string
	gvr        schema.GroupVersionResource
	namespaced bool
}

// observedKinds are the kinds osm convergence OBJECT follows: those the
// mesh watches.
var observedKinds = []observedKind{
	{layout.KindPod, []string{"pods", "pod", "po"}, schema.GroupVersionResource{Version: "v1", Resource: "pods"}, true},
	{layout.KindService, []string{"services", "service", "svc"}, schema.GroupVersionResource{Version: "v1", Resource: "services"}, true},
	{layout.KindEndpointSlice, []string{"endpointslices", "endpointslice"}, schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}, true},
	{layout.KindNamespace, []string{"namespaces", "namespace", "ns"}, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, false},
	{layout.KindServiceAccount, []string{"serviceaccounts", "serviceaccount", "sa"}, schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, true},
	{layout.KindTrafficTarget, []string{"traffictargets", "traffictarget", "tt"}, trafficTargetsGVR, true},
	{layout.KindHTTPRouteGroup, []string{"httproutegroups", "httproutegroup", "htr"}, httpRouteGroupsGVR, true},
	{layout.KindTCPRoute, []string{"tcproutes", "tcproute", "tr"}, tcpRoutesGVR, true},
	{layout.KindTrafficSplit, []string{"trafficsplits", "trafficsplit", "ts"}, trafficSplitsGVR, true},
	{layout.KindMeshConfig, []string{"meshconfigs", "meshconfig"}, meshConfigsGVR, true},
}

// OSM's policy kinds (policy.openservicemesh.io), from the list the
// smi-watcher reads them by, so a new kind is followed without an edit
// here: named by plural and by key (retries, retry).
func init() {
	for _, k := range osmpolicy.Kinds() {
		observedKinds = append(observedKinds, observedKind{k.Key, []string{k.Resource.Resource, k.Key}, k.Resource, true})
	}
}

// kindNames lists the kinds for errors and help.
func kindNames() string {
	out := make([]string, len(observedKinds))
	for i, k := range observedKinds {
		out[i] = k.names[0]
	}
	return strings.Join(out, ", ")
}

// meshObject is the object osm convergence OBJECT follows.
type meshObject struct {
	kind      observedKind
	namespace string
	name      string
}

func (o meshObject) String() string {
	if o.namespace == "" {
		return o.kind.key + "/" + o.name
	}
	return o.kind.key + "/" + o.namespace + "/" + o.name
}

// parseObject parses KIND/NAMESPACE/NAME (KIND/NAME for a namespace, and
// for a meshconfig, which then is the control plane's, cpNamespace).
func parseObject(arg, cpNamespace string) (meshObject, error) {
	parts := strings.Split(arg, "/")
	var kind *observedKind
	for i := range observedKinds {
		if slices.Contains(observedKinds[i].names, strings.ToLower(parts[0])) {
			kind = &observedKinds[i]
		}
	}
	if kind == nil {
		return meshObject{}, fmt.Errorf("object %q: unknown kind %q; osm convergence follows the kinds the mesh watches: %s", arg, parts[0], kindNames())
	}
	for _, p := range parts[1:] {
		if p == "" {
			return meshObject{}, fmt.Errorf("object %q: an empty name; want %s", arg, objectForm(*kind))
		}
	}
	switch {
	case !kind.namespaced && len(parts) == 2:
		return meshObject{kind: *kind, name: parts[1]}, nil
	case kind.namespaced && len(parts) == 3:
		return meshObject{kind: *kind, namespace: parts[1], name: parts[2]}, nil
	case kind.key == layout.KindMeshConfig && len(parts) == 2:
		return meshObject{kind: *kind, namespace: cpNamespace, name: parts[1]}, nil
	case kind.namespaced && len(parts) == 2:
		return meshObject{}, fmt.Errorf("object %q: give its namespace, %s/<namespace>/%s (-n is the control plane's namespace in osm, not the object's)", arg, parts[0], parts[1])
	}
	return meshObject{}, fmt.Errorf("object %q: want %s", arg, objectForm(*kind))
}

func objectForm(k observedKind) string {
	if k.namespaced {
		return k.names[1] + "/NAMESPACE/NAME"
	}
	return k.names[1] + "/NAME"
}

// kubeWrite reads obj from the Kubernetes API: when it was last written
// (the newest managedFields time, else its creation; to the second) and
// its metadata.generation. Errors name the object and say what to check.
func kubeWrite(ctx context.Context, dyn dynamic.Interface, obj meshObject) (time.Time, int64, error) {
	var ri dynamic.ResourceInterface = dyn.Resource(obj.kind.gvr)
	if obj.namespace != "" {
		ri = dyn.Resource(obj.kind.gvr).Namespace(obj.namespace)
	}
	u, err := ri.Get(ctx, obj.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		hint := "kubectl get " + obj.kind.names[0]
		if obj.namespace != "" {
			hint += " -n " + obj.namespace
		}
		return time.Time{}, 0, fmt.Errorf("%s not found in the Kubernetes API: check its kind, namespace and name (%s)", obj, hint)
	case err != nil:
		return time.Time{}, 0, fmt.Errorf("read %s from the Kubernetes API: %w", obj, err)
	}
	at := u.GetCreationTimestamp().Time
	for _, f := range u.GetManagedFields() {
		if f.Time != nil && f.Time.After(at) {
			at = f.Time.Time
		}
	}
	return at.UTC(), u.GetGeneration(), nil
}

// errNotInMesh says the watcher has no entry of the object.
var errNotInMesh = errors.New("not in the mesh")

// observedEntry asks the edges, one after the other, for obj's latest
// entry in mesh-observed; every edge reads the same bucket, so the first
// answer is the answer.
func observedEntry(ctx context.Context, edges []*access.Edge, obj meshObject) (edgedebug.ObservedEntry, error) {
	var errs []error
	for _, e := range edges {
		var entry edgedebug.ObservedEntry
		err := e.Get(ctx, edgedebug.ObservedPath(obj.kind.key, obj.namespace, obj.name), &entry)
		var se *access.StatusError
		switch {
		case err == nil:
			return entry, nil
		case errors.As(err, &se) && se.Code == http.StatusNotFound:
			return entry, fmt.Errorf("%s is %w: the smi-watcher has no entry for it in mesh-observed (%s)", obj, errNotInMesh, notInMeshHint(obj))
		case errors.As(err, &se) && se.Code == http.StatusNotImplemented:
			errs = append(errs, fmt.Errorf("%w (upgrade the xds-edges: osm convergence OBJECT needs edges that read mesh-observed)", err))
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return edgedebug.ObservedEntry{}, errors.New("no ready xds-edge to ask")
	}
	return edgedebug.ObservedEntry{}, fmt.Errorf("%s: no xds-edge read its mesh-observed entry: %w", obj, errors.Join(errs...))
}

func notInMeshHint(obj meshObject) string {
	switch obj.kind.key {
	case layout.KindNamespace:
		return "osm namespace add " + obj.name + " adds it"
	case layout.KindMeshConfig:
		return "the mesh reads only its own MeshConfig, in the control plane's namespace: check the name"
	}
	return "is namespace " + obj.namespace + " in the mesh? osm namespace list shows the meshed ones, osm namespace add " + obj.namespace + " adds it"
}

// rememberedGenerations are the generations the edges remember, merged
// (one per epoch and number), oldest first.
func rememberedGenerations(ctx context.Context, ac *access.Client, warn io.Writer) ([]edgedebug.GenerationSummary, error) {
	edges, err := ac.Edges(ctx)
	if err != nil {
		return nil, err
	}
	lists, err := askEdges(ctx, edges, func(e *access.Edge) (edgedebug.Generations, error) {
		var l edgedebug.Generations
		return l, e.Get(ctx, edgedebug.PathGenerations, &l)
	}, warn)
	if err != nil {
		return nil, err
	}
	var out []edgedebug.GenerationSummary
	for _, l := range lists {
		out = append(out, l.Generations...)
	}
	slices.SortStableFunc(out, func(a, b edgedebug.GenerationSummary) int {
		return cmp.Or(cmp.Compare(a.Epoch, b.Epoch), cmp.Compare(a.Number, b.Number))
	})
	return slices.CompactFunc(out, func(a, b edgedebug.GenerationSummary) bool { return a.Epoch == b.Epoch && a.Number == b.Number }), nil
}

// inclusion is how a write relates to the remembered generations.
type inclusion int

const (
	// included: the generation found is the first that includes it.
	included inclusion = iota
	// beforeWindow: the oldest remembered generation includes it
	// already; the first may be older and forgotten.
	beforeWindow
	// notIncluded: no remembered generation includes it.
	notIncluded
)

// includingGeneration finds, among gens (oldest first), the first
// generation that includes the mesh-observed write at revision rev of
// watcher epoch epoch: the first whose observed revision is at least rev,
// in that observed epoch or a later one (revisions of one bucket compare
// across the watcher's epochs; a recreated bucket restarts them, but then
// the watcher rewrites every key in a new epoch). An epoch of 0 is
// unknown and compares with every one. It is the first of all only when
// the generation before it is remembered too (or it starts its mesh
// epoch); otherwise the including generation may have left the window.
func includingGeneration(gens []edgedebug.GenerationSummary, rev, epoch uint64) (edgedebug.GenerationSummary, inclusion) {
	for i, g := range gens {
		if epoch != 0 && g.ObservedEpoch != 0 && g.ObservedEpoch < epoch || g.ObservedRevision < rev {
			continue
		}
		if g.Number == 1 || i > 0 && gens[i-1].Epoch == g.Epoch && gens[i-1].Number == g.Number-1 {
			return g, included
		}
		return g, beforeWindow
	}
	if len(gens) == 0 {
		return edgedebug.GenerationSummary{}, notIncluded
	}
	return gens[len(gens)-1], notIncluded
}

// objectReport is osm convergence OBJECT's answer, in json and yaml.
type objectReport struct {
	// Object is KIND/NAMESPACE/NAME.
	Object string `json:"object"`
	// KubernetesWrite is the object's last write as the Kubernetes API
	// records it: the newest managedFields time, else its creation (to
	// the second).
	KubernetesWrite time.Time `json:"kubernetes_write"`
	// Observed is the smi-watcher's latest write of it in mesh-observed.
	Observed edgedebug.ObservedEntry `json:"observed"`
	// Timeline is the change's stages, each with its delay after the one
	// before.
	Timeline []stage `json:"timeline"`
	// Convergence is the generation that first includes the write.
	Convergence *convergenceReport `json:"convergence"`
}

// stage is one step of a change's way to the proxies.
type stage struct {
	Stage  string         `json:"stage"`
	Time   time.Time      `json:"time"`
	Delay  *time.Duration `json:"delay_ns,omitempty"`
	Detail string         `json:"detail,omitempty"`
}

// objectTimeline joins the Kubernetes write, the watcher's entry and the
// generation that includes it into the change's timeline.
func objectTimeline(obj meshObject, kube time.Time, entry edgedebug.ObservedEntry, rep *convergenceReport) *objectReport {
	out := &objectReport{Object: obj.String(), KubernetesWrite: kube, Observed: entry, Convergence: rep}
	add := func(name string, at time.Time, detail string) {
		s := stage{Stage: name, Time: at.UTC(), Detail: detail}
		if n := len(out.Timeline); n > 0 {
			d := at.Sub(out.Timeline[n-1].Time)
			s.Delay = &d
		}
		out.Timeline = append(out.Timeline, s)
	}
	if !kube.IsZero() {
		add("kubernetes write", kube, "the object's newest managedFields time (to the second)")
	}
	if entry.EventReceived != nil {
		add("watcher received", *entry.EventReceived, "the smi-watcher's informer event")
	}
	wrote := fmt.Sprintf("mesh-observed revision %d", entry.Revision)
	if entry.Deleted {
		wrote += ", a delete"
	}
	add("watcher wrote", entry.Stored, wrote)
	add("compiled", rep.CompilerCommit, fmt.Sprintf("generation %s, observed revision %d", rep.Generation, rep.ObservedRevision))
	edges := slices.Clone(rep.Edges)
	slices.SortStableFunc(edges, func(a, b convergenceEdge) int { return a.Commit.Compare(b.Commit) })
	for _, e := range edges {
		add("edge commit", e.Commit, fmt.Sprintf("%s: %d proxies affected", e.Edge, e.Affected))
	}
	if rep.Acked > 0 {
		add("ACK p50", rep.CompilerCommit.Add(rep.P50), "")
		add("ACK p99", rep.CompilerCommit.Add(rep.P99), "")
		add("last ACK", rep.CompilerCommit.Add(rep.Max), fmt.Sprintf("%d of %d proxies ACKed, %d NACKed, %d pending", rep.Acked, rep.Affected, rep.Nacked, rep.Pending))
	}
	return out
}

// printObjectConvergence writes the object's change: its timeline, then
// its generation as printConvergence prints it.
func printObjectConvergence(w io.Writer, format string, rep *objectReport) error {
	if format != "table" {
		return table{value: rep}.print(w, format)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	change := fmt.Sprintf("mesh-observed revision %d", rep.Observed.Revision)
	if rep.Observed.WatcherEpoch != 0 {
		change += fmt.Sprintf(" (watcher epoch %d)", rep.Observed.WatcherEpoch)
	}
	if rep.Observed.ObjectGeneration != 0 {
		change += fmt.Sprintf(", metadata.generation %d", rep.Observed.ObjectGeneration)
	}
	if rep.Observed.Deleted {
		change += ", removed from the mesh"
	}
	fmt.Fprintf(tw, "OBJECT\t%s\n", rep.Object)
	fmt.Fprintf(tw, "CHANGE\t%s\n", change)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t := table{header: []string{"STAGE", "TIME", "DELAY", "DETAIL"}}
	for _, s := range rep.Timeline {
		at, delay := s.Time.Format("2006-01-02T15:04:05.000Z07:00"), "-"
		if s.Stage == "kubernetes write" {
			at = s.Time.Format(time.RFC3339)
		}
		if s.Delay != nil {
			delay = "+" + millis(*s.Delay)
			if *s.Delay < 0 {
				delay = "-" + millis(-*s.Delay)
			}
		}
		t.rows = append(t.rows, []string{s.Stage, at, delay, s.Detail})
	}
	if err := t.print(w, "table"); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return printConvergence(w, "table", rep.Convergence)
}

// objectConvergence finds the generation that first includes obj's latest
// change and gathers its convergence; watch waits for the change (the
// pending one, else the next) and its proxies, within timeout each.
func objectConvergence(ctx context.Context, ac *access.Client, dyn dynamic.Interface, obj meshObject, watch bool, timeout time.Duration, warn io.Writer) (*objectReport, error) {
	kube, kubeGen, err := kubeWrite(ctx, dyn, obj)
	if err != nil && !watch {
		return nil, err
	}
	edges, err := ac.Edges(ctx)
	if err != nil {
		return nil, err
	}
	entry, err := observedEntry(ctx, edges, obj)
	if err != nil && !(watch && errors.Is(err, errNotInMesh)) {
		return nil, err
	}
	if !watch {
		if entry.Deleted {
			return nil, fmt.Errorf("%s is %w: the smi-watcher removed it from mesh-observed at %s (revision %d), though the Kubernetes API has it (%s)",
				obj, errNotInMesh, entry.Stored.Format(time.RFC3339), entry.Revision, notInMeshHint(obj))
		}
		if kubeGen > entry.ObjectGeneration && entry.ObjectGeneration != 0 {
			return nil, fmt.Errorf("the smi-watcher has not written %s's latest change yet (metadata.generation %d; mesh-observed has %d): osm convergence --watch %s waits for it",
				obj, kubeGen, entry.ObjectGeneration, obj)
		}
	}
	gens, err := rememberedGenerations(ctx, ac, warn)
	if err != nil {
		return nil, err
	}
	g, inc := includingGeneration(gens, entry.Revision, entry.WatcherEpoch)
	if watch {
		if entry, g, err = watchObject(ctx, ac, edges, obj, entry, inc != notIncluded, timeout, warn); err != nil {
			return nil, err
		}
		// The write time after the change; none when it was a deletion.
		kube, _, _ = kubeWrite(ctx, dyn, obj)
		rep, err := waitProxies(ctx, ac, g, timeout, warn)
		if err != nil {
			return nil, err
		}
		return objectTimeline(obj, kube, entry, rep), nil
	}
	switch inc {
	case beforeWindow:
		return nil, fmt.Errorf("the generation that first included %s's change (mesh-observed revision %d, written %s) has left the edges' window: the oldest they remember, %s (observed revision %d), includes it already, and each edge keeps only its last %d generations",
			obj, entry.Revision, entry.Stored.Format(time.RFC3339), g.Generation, g.ObservedRevision, 16)
	case notIncluded:
		newest := "none"
		if g.Generation != "" {
			newest = fmt.Sprintf("%s, which covers revision %d", g.Generation, g.ObservedRevision)
		}
		return nil, fmt.Errorf("no generation includes %s's change yet (mesh-observed revision %d, written %s; the newest the edges remember is %s): the policy-compiler has not compiled it, or compiling it changed no proxy's configuration (no generation is written then). osm convergence --watch %s waits for it",
			obj, entry.Revision, entry.Stored.Format(time.RFC3339), newest, obj)
	}
	rep, err := generationConvergence(ctx, ac, g.Number, g.Epoch, warn)
	if err != nil {
		return nil, err
	}
	return objectTimeline(obj, kube, entry, rep), nil
}

// watchObject waits for obj's change to be included in a generation:
// the change the entry holds when compiled is false, else the next one.
func watchObject(ctx context.Context, ac *access.Client, edges []*access.Edge, obj meshObject, entry edgedebug.ObservedEntry, compiled bool, timeout time.Duration, warn io.Writer) (edgedebug.ObservedEntry, edgedebug.GenerationSummary, error) {
	deadline := time.Now().Add(timeout)
	if compiled || entry.Revision == 0 {
		fmt.Fprintf(warn, "waiting for the next change of %s (its latest is mesh-observed revision %d)\n", obj, entry.Revision)
		for {
			next, err := observedEntry(ctx, edges, obj)
			if err == nil && next.Revision > entry.Revision {
				entry = next
				break
			}
			if err != nil && !errors.Is(err, errNotInMesh) {
				return entry, edgedebug.GenerationSummary{}, err
			}
			if time.Now().After(deadline) {
				return entry, edgedebug.GenerationSummary{}, fmt.Errorf("%s did not change within %s (--timeout)", obj, timeout)
			}
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return entry, edgedebug.GenerationSummary{}, err
			}
		}
	}
	fmt.Fprintf(warn, "%s written to mesh-observed (revision %d); waiting for the generation that includes it\n", obj, entry.Revision)
	deadline = time.Now().Add(timeout)
	for {
		gens, err := rememberedGenerations(ctx, ac, io.Discard)
		if err == nil {
			if g, inc := includingGeneration(gens, entry.Revision, entry.WatcherEpoch); inc != notIncluded {
				return entry, g, nil
			}
		}
		if time.Now().After(deadline) {
			return entry, edgedebug.GenerationSummary{}, fmt.Errorf("no generation included %s's change (mesh-observed revision %d) within %s (--timeout): compiling it may have changed no proxy's configuration",
				obj, entry.Revision, timeout)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return entry, edgedebug.GenerationSummary{}, err
		}
	}
}
