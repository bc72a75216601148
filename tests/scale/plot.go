package scale

import (
	"fmt"
	"image/color"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot writes the stage timeline as a PNG to file: one horizontal bar per
// edit, stacked from the apiserver's answer through the median of each
// stage (the EndpointSlice update for edits of pods and Services, the
// watcher's write, the compiler's generation, the last edge's commit, the
// proxies' p50 ACK) to the p99 ACK, in milliseconds.
func (r *Report) Plot(file string) error {
	kinds := r.Kinds()
	p := plot.New()
	p.Title.Text = fmt.Sprintf("kubectl apply → proxies ACKed: %d Services, %d proxies, %d edge(s) (medians; last segment to the ACK p99)",
		r.Config.Services, r.Config.Proxies, r.Config.Edges)
	p.X.Label.Text = "milliseconds after the apiserver's answer"
	p.X.Min = 0
	segments := []struct {
		name  string
		color color.RGBA
		end   func(k EditKind) time.Duration
	}{
		{"EndpointSlice update (kube)", color.RGBA{0xba, 0xb0, 0xac, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageSlice).P50 }},
		{"smi-watcher KV write", color.RGBA{0x4e, 0x79, 0xa7, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageWatcher).P50 }},
		{"policy-compiler generation", color.RGBA{0xf2, 0x8e, 0x2b, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageCompiler).P50 }},
		{"xds-edge commit (last edge)", color.RGBA{0x59, 0xa1, 0x4f, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageEdge).P50 }},
		{"proxy ACK p50", color.RGBA{0xe1, 0x57, 0x59, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageAck).P50 }},
		{"proxy ACK p99", color.RGBA{0xb0, 0x7a, 0xa1, 255}, func(k EditKind) time.Duration { return r.Stage(k, StageAck).P99 }},
	}
	w := vg.Points(18)
	var prev *plotter.BarChart
	reached := make([]time.Duration, len(kinds))
	for _, s := range segments {
		vals := make(plotter.Values, len(kinds))
		for i, k := range kinds {
			end := max(s.end(k), reached[i]) // a stage never ends before the one before it
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
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	p.NominalY(names...)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Title.TextStyle.Font.Size = vg.Points(10)
	return p.Save(10*vg.Inch, vg.Length(2+0.6*float64(len(kinds)))*vg.Inch, file)
}
