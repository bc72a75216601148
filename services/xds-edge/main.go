// Command xds-edge is OSM's xDS tier: it serves Envoy sidecars over ADS
// (state of the world and delta, with SDS) from the compiled mesh it reads
// from NATS, and never calls the Kubernetes API. Replicas scale
// horizontally.
package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/xds-edge/internal/edge"
)

// gcPercent is the edge's garbage collection target unless GOGC is set.
// Most of its heap is long-lived (the resource pool and each proxy's
// state), so at Go's default of 100 a collection, which scans all of it,
// ran every few pushes to 10,000 proxies and delayed the one it overlapped
// by a third; at 200 the heap may hold twice as much garbage.
const gcPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	var c edge.Config
	app.Main(spec(&c))
}

// spec describes the service; c receives the flags.
func spec(c *edge.Config) app.Spec {
	return app.Spec{
		Name: "xds-edge",
		Summary: "OSM's xDS tier: serves Envoy sidecars over ADS (state of the world and delta, with SDS) on an\n" +
			"mTLS listener, from KV mesh-compiled and mesh-trust in NATS. A proxy's identity is the URI SAN\n" +
			"of its client certificate. /readyz stays false until the initial sync is complete. It makes\n" +
			"no Kubernetes API call. It runs with GOGC=200 unless the GOGC environment variable is set.",
		UsesNATS: true,
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return edge.Run(ctx, rt, *c) },
	}
}
