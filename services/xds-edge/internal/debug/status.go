package debug

import (
	"net/http"

	"github.com/openservicemesh/osm/libs/edgedebug"
)

// edge serves GET edgedebug.PathEdge: the applied generation, which osm
// verify compares with the policy-compiler's latest.
func (o Options) edge(w http.ResponseWriter, _ *http.Request) {
	g := o.Source.Applied()
	writeJSON(w, edgedebug.EdgeStatus{Edge: o.EdgeID, Generation: g.String(), Epoch: g.Epoch, Number: g.Number})
}
