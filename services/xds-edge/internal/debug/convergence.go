package debug

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// generations serves GET edgedebug.PathGenerations.
func (o Options) generations(w http.ResponseWriter, _ *http.Request) {
	gs := o.Source.Generations()
	out := edgedebug.Generations{Edge: o.EdgeID, Applied: o.Source.Applied().String(), Generations: make([]edgedebug.GenerationSummary, len(gs))}
	for i, g := range gs {
		out.Generations[i] = summary(g)
	}
	writeJSON(w, out)
}

// generation serves GET edgedebug.GenerationPath.
func (o Options) generation(w http.ResponseWriter, r *http.Request) {
	number, err := strconv.ParseUint(r.PathValue("number"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("generation %q: want its number", r.PathValue("number")))
		return
	}
	var epoch uint64
	if e := r.URL.Query().Get(edgedebug.QueryEpoch); e != "" {
		if epoch, err = strconv.ParseUint(e, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("%s %q: want a number", edgedebug.QueryEpoch, e))
			return
		}
	}
	found := false
	var g pool.Gen
	for _, s := range o.Source.Generations() {
		if s.Gen.Number == number && (epoch == 0 || s.Gen.Epoch == epoch) {
			g, found = s.Gen, true // the newest comes last
		}
	}
	var c xds.GenerationConvergence
	if found {
		c, found = o.Source.Convergence(g)
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("edge %s does not remember generation %d (it keeps the last few it committed; GET %s lists them)", o.EdgeID, number, edgedebug.PathGenerations))
		return
	}
	out := edgedebug.GenerationConvergence{Edge: o.EdgeID, GenerationSummary: summary(c.GenerationSummary), Proxies: make([]edgedebug.ProxyConvergence, len(c.Proxies))}
	for i, p := range c.Proxies {
		pc := edgedebug.ProxyConvergence{NodeID: p.NodeID, Identity: p.Identity, StreamID: p.StreamID}
		if !p.Ack.IsZero() {
			at := p.Ack.UTC()
			pc.Ack, pc.Latency = &at, p.Ack.Sub(c.CompilerCommit)
		}
		if n := p.Nack; n != nil {
			pc.Nack = &edgedebug.Nack{Type: edgedebug.ShortType(n.GetTypeUrl()), Version: n.GetVersion(), Message: n.GetErrorMessage(), Time: n.GetTime().AsTime().UTC()}
		}
		out.Proxies[i] = pc
	}
	writeJSON(w, out)
}

func summary(g xds.GenerationSummary) edgedebug.GenerationSummary {
	return edgedebug.GenerationSummary{
		Generation: g.Gen.String(), Epoch: g.Gen.Epoch, Number: g.Gen.Number,
		CompilerCommit: g.CompilerCommit.UTC(), EdgeCommit: g.EdgeCommit.UTC(), ObservedRevision: g.ObservedRevision, ObservedEpoch: g.ObservedEpoch,
		Affected: g.Affected, Acked: g.Acked, Nacked: g.Nacked,
	}
}
