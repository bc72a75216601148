package scale

import (
	"fmt"
	"image/color"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot writes the stage timeline as a PNG to file: one horizontal bar per
// edit (and per edge count, with Then), stacked from the apiserver's
// answer through the median of each stage (the EndpointSlice update for
// edits of pods and Services, the watcher's write, the compiler's
// generation, the last edge's commit, the proxies' p50 ACK) to the p99
// ACK, in milliseconds.
func (r *Report) Plot(file string) error {
	type row struct {
		name string
		rep  *Report
		kind EditKind
	}
	var rows []row
	for rep := r; rep != nil; rep = rep.Then {
		for _, k := range rep.Kinds() {
			name := string(k)
			if r.Then != nil {
				name = fmt.Sprintf("%s, %d edge(s)", k, rep.Config.Edges)
			}
			rows = append(rows, row{name, rep, k})
		}
	}
	// The first edit on top.
	slices.Reverse(rows)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("kubectl apply → affected proxies ACKed: %d Services, %d pods, %d proxies (medians; the last segment ends at the ACK p99)",
		r.Config.Services, r.Config.Pods, r.Config.Proxies)
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.Text = "milliseconds after the apiserver's answer"
	p.X.Min = 0
	segments := []struct {
		name  string
		color color.RGBA
		stage string
	}{
		{"EndpointSlice update (kube)", color.RGBA{0xba, 0xb0, 0xac, 255}, StageSlice},
		{"smi-watcher KV write", color.RGBA{0x4e, 0x79, 0xa7, 255}, StageWatcher},
		{"policy-compiler generation", color.RGBA{0xf2, 0x8e, 0x2b, 255}, StageCompiler},
		{"xds-edge commit (last edge)", color.RGBA{0x59, 0xa1, 0x4f, 255}, StageEdge},
		{"proxy ACK p50", color.RGBA{0xe1, 0x57, 0x59, 255}, StageAck},
		{"proxy ACK p99", color.RGBA{0xb0, 0x7a, 0xa1, 255}, StageAck},
	}
	w := vg.Points(14)
	var prev *plotter.BarChart
	reached := make([]time.Duration, len(rows))
	for si, s := range segments {
		vals := make(plotter.Values, len(rows))
		for i, rw := range rows {
			q := rw.rep.Stage(rw.kind, s.stage)
			end := q.P50
			if si == len(segments)-1 {
				end = q.P99
			}
			end = max(end, reached[i]) // a stage never ends before the one before it
			vals[i] = float64(end-reached[i]) / float64(time.Millisecond)
			reached[i] = end
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.Horizontal = true
		b.Color = s.color
		b.LineStyle.Width = 0
		if prev != nil {
			b.StackOn(prev)
		}
		p.Add(b)
		p.Legend.Add(s.name, b)
		prev = b
	}
	// Room on the right for the legend.
	p.X.Max = float64(slices.Max(reached)) / float64(time.Millisecond) * 1.45
	names := make([]string, len(rows))
	for i, rw := range rows {
		names[i] = rw.name
	}
	p.NominalY(names...)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	return p.Save(11*vg.Inch, vg.Length(1.5+0.35*float64(len(rows)))*vg.Inch, file)
}
