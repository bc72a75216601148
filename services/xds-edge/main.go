// Command xds-edge is OSM's xDS tier: it serves Envoy sidecars over ADS
// (state of the world and delta, with SDS) from the compiled mesh it reads
// from NATS, and never calls the Kubernetes API. Replicas scale
// horizontally.
package main

import (
	"os"
	"runtime/debug"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/xds-edge/internal/service"
)

// gcPercent is the edge's garbage collection target unless GOGC is set.
// Most of its heap is long-lived (the resource pool and each proxy's
// state), and a collection scans all of it: at Go's default of 100 one runs
// every few pushes to a large mesh and slows the push it overlaps. At 200
// they run half as often, for at most twice the live heap.
const gcPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	app.Main(service.Spec(service.Options{}))
}
