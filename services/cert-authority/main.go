// Command cert-authority is OSM's mesh certificate authority: it signs
// workload CSRs over gRPC with mutual TLS, serves the trust bundle and
// publishes it to NATS KV mesh-trust. Run it with --help for its flags.
package main

import (
	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/cert-authority/internal/service"
)

func main() { app.Main(service.Spec(service.Options{})) }
