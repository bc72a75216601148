package scale

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// EditResult is what one edit measured; every duration counts from the
// apiserver's answer to the write (t0), and is 0 when unknown.
type EditResult struct {
	Kind EditKind
	What string
	// Affected proxies, those that had not ACKed the edit by the timeout,
	// and those that held it already before the write (a harness error).
	Affected, Missing, Already int
	// Apply is how long the write took (to t0, from its start).
	Apply time.Duration
	// Slice is when the harness's own watch received the last
	// EndpointSlice update carrying the edit (the endpointslice
	// controller's write) before the generation; 0 for edits of no pod or
	// Service. The watcher, another watch of the same apiserver, may
	// receive it first.
	Slice time.Duration
	// Watcher is the last mesh-observed write carrying the edit
	// (WatcherKey); Compiler the generation record Gen; Edges each edge's
	// commit of it (EdgeMissing: edges whose log showed none).
	Watcher    time.Duration
	WatcherKey string
	Gen        uint64
	Compiler   time.Duration
	Edges      []time.Duration
	// EdgeMissing counts edges whose commit was not found.
	EdgeMissing int
	// Acks are the affected proxies' ACKs.
	Acks []time.Duration
	// CPU is each process's CPU time over Window, from the write's start
	// to the last ACK.
	CPU    cpuSample
	Window time.Duration
}

// Last is the last affected proxy's ACK.
func (e *EditResult) Last() time.Duration { return slices.Max(append([]time.Duration{0}, e.Acks...)) }

// LastEdge is the last edge's commit.
func (e *EditResult) LastEdge() time.Duration {
	return slices.Max(append([]time.Duration{0}, e.Edges...))
}

func (e *EditResult) problems() string {
	var p []string
	if e.Missing > 0 {
		p = append(p, fmt.Sprintf("%d proxies missed it", e.Missing))
	}
	if e.Already > 0 {
		p = append(p, fmt.Sprintf("%d proxies held it before the write", e.Already))
	}
	if e.Watcher == 0 {
		p = append(p, "no watcher write seen")
	}
	if e.Compiler == 0 {
		p = append(p, fmt.Sprintf("generation %d not seen", e.Gen))
	}
	if e.EdgeMissing > 0 {
		p = append(p, fmt.Sprintf("%d edges' commit not seen", e.EdgeMissing))
	}
	if len(p) == 0 {
		return ""
	}
	return "; " + strings.Join(p, ", ")
}

// Report is a run's figures.
type Report struct {
	Config Config
	shape  shape
	// MeshCreated is the time to write the mesh and make its pods Ready;
	// ControlPlaneReady the time from starting the services to every one
	// ready (the watcher synced, the compiler's first generation, the
	// edges holding it); InitialSync the proxies' connection to their
	// first response of every type; Setup all of it, Wall the whole run.
	MeshCreated, ControlPlaneReady, InitialSync, Setup, Wall time.Duration
	Edits                                                    []*EditResult
	Procs                                                    []proc
	// PeakRSS is each process's peak resident set (VmHWM), by name (the
	// edges each under their own).
	PeakRSS map[string]float64
	// Then is the second round over Config.ThenEdges edges (its
	// ControlPlaneReady the new edges' start, its InitialSync the
	// proxies' move); nil without one.
	Then *Report
}

// Quantiles summarise durations.
type Quantiles struct {
	N             int
	P50, P99, Max time.Duration
}

func quantiles(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	d = slices.Clone(d)
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Quantiles{N: len(d), P50: at(0.50), P99: at(0.99), Max: d[len(d)-1]}
}

// Stage names, in pipeline order.
const (
	StageSlice    = "EndpointSlice update (kube)"
	StageWatcher  = "watcher KV write"
	StageCompiler = "compiler generation"
	StageEdge     = "edge commit (last edge)"
	StageAck      = "proxy ACK (each affected)"
	StageLast     = "last proxy ACK (per edit)"
)

// Stages lists the stages in pipeline order.
func Stages() []string {
	return []string{StageSlice, StageWatcher, StageCompiler, StageEdge, StageAck, StageLast}
}

// Stage summarises stage over the edits of kind.
func (r *Report) Stage(kind EditKind, stage string) Quantiles {
	var d []time.Duration
	for _, e := range r.Edits {
		if e.Kind != kind {
			continue
		}
		switch stage {
		case StageSlice:
			if e.Slice != 0 {
				d = append(d, e.Slice)
			}
		case StageWatcher:
			if e.Watcher != 0 {
				d = append(d, e.Watcher)
			}
		case StageCompiler:
			if e.Compiler != 0 {
				d = append(d, e.Compiler)
			}
		case StageEdge:
			if len(e.Edges) > 0 {
				d = append(d, e.LastEdge())
			}
		case StageAck:
			d = append(d, e.Acks...)
		case StageLast:
			d = append(d, e.Last())
		}
	}
	return quantiles(d)
}

// Kinds lists the edit kinds the run made, in order.
func (r *Report) Kinds() []EditKind {
	var out []EditKind
	for _, e := range r.Edits {
		if !slices.Contains(out, e.Kind) {
			out = append(out, e.Kind)
		}
	}
	return out
}

// Goal is the goal for an edit kind at full size with one edge:
// the p99 of the proxies' ACKs (for the joining namespace, the last
// proxy's), 0 when there is none.
func Goal(kind EditKind) time.Duration {
	switch kind {
	case PodNotReady, SplitWeight:
		return time.Second
	case NewTarget:
		return 1500 * time.Millisecond
	case NamespaceIn:
		return 5 * time.Second
	}
	return 0
}

// GoalFigure is the figure Goal(kind) bounds.
func (r *Report) GoalFigure(kind EditKind) time.Duration {
	if kind == NamespaceIn {
		return r.Stage(kind, StageLast).Max
	}
	return r.Stage(kind, StageAck).P99
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// Print writes the tables, then those of the round over more edges.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "== %d edge(s) ==\nmesh: %d Services in %d namespaces, %d pods, %d TrafficTargets, %d HTTPRouteGroups, %d TrafficSplits; %d proxies over %d edge(s); each edit %d times\n",
		c.Edges, c.Services, r.shape.namespaces, c.Pods, r.shape.tts, c.RouteGroups, c.Splits, c.Proxies, c.Edges, c.Repeat)
	if r.MeshCreated > 0 {
		fmt.Fprintf(w, "setup: mesh written and pods Ready %s, control plane ready %s, proxies' initial sync %s; whole run %s\n\n",
			r.MeshCreated.Round(time.Second), r.ControlPlaneReady.Round(time.Second), r.InitialSync.Round(time.Millisecond), r.Wall.Round(time.Second))
	} else {
		fmt.Fprintf(w, "the same mesh: more edges started in %s, every proxy moved to edge (index mod edges) in %s\n\n",
			r.ControlPlaneReady.Round(time.Second), r.InitialSync.Round(time.Millisecond))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "edit\tstage, from the apiserver's answer\tn\tp50\tp99\tmax\t")
	for _, k := range r.Kinds() {
		for _, st := range Stages() {
			q := r.Stage(k, st)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t\n", k, st, q.N, ms(q.P50), ms(q.P99), ms(q.Max))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "edit\taffected proxies (per edit)\tmissed\theld before\tgoal\tfigure\tmet\t")
	for _, k := range r.Kinds() {
		aff, miss, already := []string{}, 0, 0
		for _, e := range r.Edits {
			if e.Kind == k {
				aff = append(aff, fmt.Sprint(e.Affected))
				miss += e.Missing
				already += e.Already
			}
		}
		g, fig, met := Goal(k), r.GoalFigure(k), "-"
		goal := "-"
		if g > 0 {
			goal = "≤ " + ms(g)
			met = map[bool]string{true: "yes", false: "NO"}[fig <= g]
			if k == NamespaceIn {
				goal += " (max)"
			} else {
				goal += " (p99)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", k, strings.Join(aff, ","), miss, already, goal, ms(fig), met)
	}
	tw.Flush()
	fmt.Fprintln(w, "(the goals are the issue's, for the full size with one edge)")
	fmt.Fprintln(w)
	// CPU per edit, by process.
	names := map[string]bool{}
	for _, e := range r.Edits {
		for n := range e.CPU {
			names[n] = true
		}
	}
	var ns []string
	for n := range names {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "CPU-seconds per edit (mean), by process\t")
	for _, k := range r.Kinds() {
		fmt.Fprintf(tw, "%s\t", k)
	}
	fmt.Fprintf(tw, "peak RSS\t\n")
	for _, n := range ns {
		fmt.Fprintf(tw, "%s\t", n)
		for _, k := range r.Kinds() {
			var sum time.Duration
			cnt := 0
			for _, e := range r.Edits {
				if e.Kind == k {
					sum += e.CPU[n]
					cnt++
				}
			}
			fmt.Fprintf(tw, "%.2f\t", sum.Seconds()/float64(max(cnt, 1)))
		}
		fmt.Fprintf(tw, "%.0f MB\t\n", r.PeakRSS[n]/1e6)
	}
	fmt.Fprint(tw, "edit window (write to last ACK), mean\t")
	for _, k := range r.Kinds() {
		var sum time.Duration
		cnt := 0
		for _, e := range r.Edits {
			if e.Kind == k {
				sum += e.Window
				cnt++
			}
		}
		fmt.Fprintf(tw, "%.2f s\t", sum.Seconds()/float64(max(cnt, 1)))
	}
	fmt.Fprint(tw, "\t\n")
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "each edit:")
	for _, e := range r.Edits {
		fmt.Fprintf(w, "  %s: %s: generation %d, EndpointSlice %s, watcher %s (%s), compiler %s, edges %s, ACKs over %d proxies: last %s%s\n",
			e.Kind, e.What, e.Gen, ms(e.Slice), ms(e.Watcher), e.WatcherKey, ms(e.Compiler), msList(e.Edges), len(e.Acks), ms(e.Last()), e.problems())
	}
	if r.Then != nil {
		fmt.Fprintln(w)
		r.Then.Print(w)
	}
}

func msList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, ms(d))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// Failures lists what makes a run wrong whatever the machine: a proxy that
// missed an edit, an edit already held before its write, a stage not seen.
func (r *Report) Failures() []string {
	var out []string
	for _, e := range r.Edits {
		if p := e.problems(); p != "" {
			out = append(out, fmt.Sprintf("%s (%s)%s", e.Kind, e.What, p))
		}
		if e.Affected == 0 {
			out = append(out, fmt.Sprintf("%s (%s): no affected proxy", e.Kind, e.What))
		}
	}
	if r.Then != nil {
		out = append(out, r.Then.Failures()...)
	}
	return out
}
