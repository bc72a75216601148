// Command xds-edge is OSM's xDS tier: it serves Envoy sidecars over ADS
// (state of the world and delta, with SDS) from the compiled mesh it reads
// from NATS, and never calls the Kubernetes API. Replicas scale
// horizontally.
package main

import (
	"context"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/xds-edge/internal/edge"
)

func main() {
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
			"no Kubernetes API call.",
		UsesNATS: true,
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return edge.Run(ctx, rt, *c) },
	}
}
