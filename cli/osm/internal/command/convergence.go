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
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/libs/edgedebug"
)

// convergenceReport is one generation's convergence over every edge, as
// osm convergence prints it in json and yaml.
type convergenceReport struct {
	Generation string `json:"generation"`
	Epoch      uint64 `json:"epoch"`
	Number     uint64 `json:"number"`
	// CompilerCommit is when the policy-compiler committed the generation.
	CompilerCommit time.Time `json:"compiler_commit"`
	// ObservedRevision is the KV mesh-observed revision of the last
	// smi-watcher write the generation includes.
	ObservedRevision uint64             `json:"observed_revision"`
	Edges            []convergenceEdge  `json:"edges"`
	Proxies          []convergenceProxy `json:"proxies"`
	Affected         int                `json:"affected"`
	Acked            int                `json:"acked"`
	Nacked           int                `json:"nacked"`
	// Pending counts the affected proxies with no ACK yet.
	Pending int `json:"pending"`
	// P50, P99 and Max are over the ACKs' latencies from the compiler's
	// commit (nearest rank), as the edges' osm_xds_push_ack_latency_seconds.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
	// Stragglers are the proxies slower than p99 or with no ACK yet, by
	// node id.
	Stragglers []string `json:"stragglers"`
}

// convergenceEdge is one edge's commit of the generation.
type convergenceEdge struct {
	Edge   string    `json:"edge"`
	Commit time.Time `json:"commit"`
	// Delay is the commit's delay after the compiler's.
	Delay    time.Duration `json:"delay_ns"`
	Affected int           `json:"affected"`
	Acked    int           `json:"acked"`
	Nacked   int           `json:"nacked"`
}

// convergenceProxy is one affected proxy.
type convergenceProxy struct {
	// Pod is NAMESPACE/NAME of the pod whose osm-proxy-uuid label is the
	// node id; empty when none has it.
	Pod  string `json:"pod"`
	Edge string `json:"edge"`
	edgedebug.ProxyConvergence
}

func convergenceCommand(g *globals) *cobra.Command {
	var output string
	var number, epoch uint64
	var watch bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "convergence [OBJECT | --generation N]",
		Short: "Show how one change reached every proxy it changed",
		Long: `convergence shows, for one compiled generation (the newest the edges
remember unless --generation names one), its timeline: when the
policy-compiler committed it (and the mesh-observed revision of the last
smi-watcher write it includes), when each xds-edge committed it, and
when each proxy whose configuration it changed ACKed or NACKed it. It
prints the p50, p99 and maximum latency from the compiler's commit to
the ACKs (the measure of the edges' osm_xds_push_ack_latency_seconds),
the stragglers (slower than p99, or not ACKed yet) and the NACKs.

With OBJECT (KIND/NAMESPACE/NAME, or KIND/NAME for a namespace and for a
meshconfig of the control plane's namespace) it follows that object's
latest change: the timeline starts at its Kubernetes write (the newest
managedFields time, to the second), then when the smi-watcher received
the event and wrote the object into KV mesh-observed (the entry's
revision and stored time, which an edge reads for osm), then the first
generation whose observed revision includes that write, and that
generation's edge commits and ACKs, each stage with its delay after the
one before. An object unchanged since shows the generation of its last
change. KIND is one the mesh watches: ` + kindNames() + `
(singular, plural or kubectl's short name).

Each edge remembers its last 16 generations: an older change is reported
as having left that window. --watch waits for the next generation (with
OBJECT: the object's pending change, else its next one) and for every
proxy it changed to answer (or --timeout), then prints it.

` + proxyHelp,
		Example: `  # the newest generation
  osm convergence
  osm convergence --generation 42 -o json
  # the last change of a TrafficSplit: Kubernetes write, watcher, compiler, edges, ACKs
  osm convergence trafficsplit/bookstore/bookstore-split
  osm convergence ns/bookstore -o yaml
  # edit a TrafficSplit in another terminal, then see it converge
  osm convergence --watch trafficsplit/bookstore/bookstore-split --timeout 2m
  osm convergence --watch`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if cmd.Flags().Changed("epoch") && !cmd.Flags().Changed("generation") {
				return fmt.Errorf("--epoch picks the epoch of --generation: give --generation too")
			}
			if watch && cmd.Flags().Changed("generation") {
				return fmt.Errorf("--watch follows the next generation: leave out --generation")
			}
			if len(args) == 1 && cmd.Flags().Changed("generation") {
				return fmt.Errorf("give OBJECT or --generation, not both: OBJECT finds its generation")
			}
			ctx := cmd.Context()
			ac, cs, err := g.meshAccess(cmd)
			if err != nil {
				return err
			}
			defer ac.Close()
			var obj *objectReport
			var rep *convergenceReport
			switch {
			case len(args) == 1:
				o, err := parseObject(args[0], g.namespace)
				if err != nil {
					return err
				}
				dyn, err := g.dynamic()
				if err != nil {
					return err
				}
				if obj, err = objectConvergence(ctx, ac, dyn, o, watch, timeout, g.streams.Err); err != nil {
					return err
				}
				rep = obj.Convergence
			case watch:
				rep, err = watchConvergence(ctx, ac, timeout, g.streams.Err)
			default:
				rep, err = generationConvergence(ctx, ac, number, epoch, g.streams.Err)
			}
			if err != nil {
				return err
			}
			pods, err := meshedPods(ctx, cs, "")
			if err != nil {
				fmt.Fprintf(g.streams.Err, "warning: %v; the POD column is empty\n", err)
			}
			for i := range rep.Proxies {
				rep.Proxies[i].Pod = podName(pods[rep.Proxies[i].NodeID])
			}
			if obj != nil {
				return printObjectConvergence(g.streams.Out, output, obj)
			}
			return printConvergence(g.streams.Out, output, rep)
		},
	}
	cmd.Flags().Uint64Var(&number, "generation", 0, "the generation's number (default the newest the edges remember)")
	cmd.Flags().Uint64Var(&epoch, "epoch", 0, "the generation's epoch, when the edges remember that number in two epochs (default the newest)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "wait for the next generation (with OBJECT: its pending or next change) and for every proxy it changed to answer, then print it")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --watch, how long to wait for the change, then for its generation, then for its proxies")
	addOutputFlag(cmd, &output)
	return cmd
}

// newestGeneration asks every edge for the generations it remembers and
// returns the newest (the largest epoch, then number); zero when none.
func newestGeneration(ctx context.Context, ac *access.Client, warn io.Writer) (edgedebug.GenerationSummary, error) {
	gens, err := rememberedGenerations(ctx, ac, warn)
	if err != nil || len(gens) == 0 {
		return edgedebug.GenerationSummary{}, err
	}
	return gens[len(gens)-1], nil
}

// generationConvergence gathers generation number (the newest when 0) of
// epoch (any when 0) from every edge.
func generationConvergence(ctx context.Context, ac *access.Client, number, epoch uint64, warn io.Writer) (*convergenceReport, error) {
	if number == 0 {
		newest, err := newestGeneration(ctx, ac, warn)
		if err != nil {
			return nil, err
		}
		if newest.Number == 0 {
			return nil, fmt.Errorf("no xds-edge remembers a generation: they keep those they committed since they started")
		}
		number, epoch = newest.Number, newest.Epoch
	}
	edges, err := ac.Edges(ctx)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var missing []string
	answers, err := askEdges(ctx, edges, func(e *access.Edge) (*edgedebug.GenerationConvergence, error) {
		var c edgedebug.GenerationConvergence
		err := e.Get(ctx, edgedebug.GenerationPath(number, epoch), &c)
		if se := (*access.StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusNotFound {
			mu.Lock()
			missing = append(missing, e.Name)
			mu.Unlock()
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &c, nil
	}, warn)
	if err != nil {
		return nil, err
	}
	answers = slices.DeleteFunc(answers, func(c *edgedebug.GenerationConvergence) bool { return c == nil })
	if len(answers) == 0 {
		return nil, fmt.Errorf("no xds-edge remembers generation %d (each keeps its last 16; osm convergence without --generation shows the newest)", number)
	}
	slices.Sort(missing)
	for _, name := range missing {
		fmt.Fprintf(warn, "warning: xds-edge %s does not remember generation %d (not committed there yet, or too old); its proxies are missing\n", name, number)
	}
	return mergeConvergence(answers), nil
}

// mergeConvergence joins the edges' answers for one generation.
func mergeConvergence(answers []*edgedebug.GenerationConvergence) *convergenceReport {
	slices.SortFunc(answers, func(a, b *edgedebug.GenerationConvergence) int { return cmp.Compare(a.Edge, b.Edge) })
	first := answers[0]
	rep := &convergenceReport{Generation: first.Generation, Epoch: first.Epoch, Number: first.Number,
		CompilerCommit: first.CompilerCommit, ObservedRevision: first.ObservedRevision, Proxies: []convergenceProxy{}, Stragglers: []string{}}
	var lat []time.Duration
	for _, a := range answers {
		rep.Edges = append(rep.Edges, convergenceEdge{Edge: a.Edge, Commit: a.EdgeCommit, Delay: a.EdgeCommit.Sub(a.CompilerCommit), Affected: a.Affected, Acked: a.Acked, Nacked: a.Nacked})
		rep.Affected += a.Affected
		rep.Acked += a.Acked
		rep.Nacked += a.Nacked
		for _, p := range a.Proxies {
			rep.Proxies = append(rep.Proxies, convergenceProxy{Edge: a.Edge, ProxyConvergence: p})
			if p.Ack != nil {
				lat = append(lat, p.Latency)
			}
		}
	}
	rep.Pending = rep.Affected - len(lat)
	slices.Sort(lat)
	rep.P50, rep.P99 = rank(lat, 0.50), rank(lat, 0.99)
	if len(lat) > 0 {
		rep.Max = lat[len(lat)-1]
	}
	slices.SortFunc(rep.Proxies, func(a, b convergenceProxy) int {
		return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.Edge, b.Edge))
	})
	for _, p := range rep.Proxies {
		if p.Ack == nil || p.Latency > rep.P99 {
			rep.Stragglers = append(rep.Stragglers, p.NodeID)
		}
	}
	return rep
}

// rank is the nearest-rank q-quantile of sorted values; 0 when empty.
func rank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// watchConvergence waits for a generation newer than the newest now, then
// for every proxy it affected to answer, within timeout each.
func watchConvergence(ctx context.Context, ac *access.Client, timeout time.Duration, warn io.Writer) (*convergenceReport, error) {
	start, err := newestGeneration(ctx, ac, warn)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(warn, "waiting for a generation after %s\n", cmp.Or(start.Generation, "none"))
	deadline := time.Now().Add(timeout)
	var next edgedebug.GenerationSummary
	for {
		if next, err = newestGeneration(ctx, ac, io.Discard); err == nil && (next.Epoch > start.Epoch || next.Epoch == start.Epoch && next.Number > start.Number) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no generation after %s within %s (--timeout)", cmp.Or(start.Generation, "none"), timeout)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return waitProxies(ctx, ac, next, timeout, warn)
}

// waitProxies waits, within timeout, for every proxy generation next
// affected to answer, and returns its convergence then (or at the
// timeout, with the proxies still pending).
func waitProxies(ctx context.Context, ac *access.Client, next edgedebug.GenerationSummary, timeout time.Duration, warn io.Writer) (*convergenceReport, error) {
	fmt.Fprintf(warn, "generation %s committed; waiting for its proxies\n", next.Generation)
	deadline := time.Now().Add(timeout)
	for {
		rep, err := generationConvergence(ctx, ac, next.Number, next.Epoch, io.Discard)
		if err == nil && (rep.Pending == 0 || time.Now().After(deadline)) {
			return rep, nil
		}
		if err != nil && time.Now().After(deadline) {
			return nil, err
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// printConvergence writes rep: in table form the timeline, the figures,
// the stragglers and NACKs, then every proxy.
func printConvergence(w io.Writer, format string, rep *convergenceReport) error {
	if format != "table" {
		return table{value: rep}.print(w, format)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "GENERATION\t%s (mesh-observed revision %d)\n", rep.Generation, rep.ObservedRevision)
	fmt.Fprintf(tw, "COMPILED\t%s\n", rep.CompilerCommit.UTC().Format(time.RFC3339Nano))
	for _, e := range rep.Edges {
		fmt.Fprintf(tw, "EDGE COMMIT\t%s +%s (%d proxies, %d ACKed, %d NACKed)\n", e.Edge, millis(e.Delay), e.Affected, e.Acked, e.Nacked)
	}
	fmt.Fprintf(tw, "PROXIES\t%d affected, %d ACKed, %d NACKed, %d pending\n", rep.Affected, rep.Acked, rep.Nacked, rep.Pending)
	fmt.Fprintf(tw, "LATENCY\tp50 %s, p99 %s, max %s (compiler commit to ACK)\n", millis(rep.P50), millis(rep.P99), millis(rep.Max))
	fmt.Fprintf(tw, "STRAGGLERS\t%s\n", firstOf(rep.Stragglers, 10))
	var nacks []string
	for _, p := range rep.Proxies {
		if p.Nack != nil {
			nacks = append(nacks, p.NodeID+": "+nackText(p.Nack))
		}
	}
	fmt.Fprintf(tw, "NACKS\t%s\n", firstOf(nacks, 10))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t := table{header: []string{"POD", "IDENTITY", "EDGE", "ACK", "LATENCY", "NACK"}}
	for _, p := range rep.Proxies {
		ack, lat := "pending", "-"
		if p.Ack != nil {
			ack, lat = p.Ack.UTC().Format("15:04:05.000"), millis(p.Latency)
		}
		t.rows = append(t.rows, []string{cmp.Or(p.Pod, "node "+p.NodeID), shortIdentity(p.Identity), p.Edge, ack, lat, nackText(p.Nack)})
	}
	return t.print(w, "table")
}

// ms prints a duration in milliseconds, to the tenth.
func millis(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// firstOf joins the first n of xs, saying how many more.
func firstOf(xs []string, n int) string {
	switch {
	case len(xs) == 0:
		return "none"
	case len(xs) <= n:
		return strings.Join(xs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(xs[:n], ", "), len(xs)-n)
}
