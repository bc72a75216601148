// Command policy-compiler compiles the observed mesh state in KV
// mesh-observed into Envoy xDS resources and per-identity proxy groups in KV
// mesh-compiled, incrementally, and publishes a verdict for every policy
// object on mesh.status.policy.>.
package main

import (
	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/service"
)

func main() { app.Main(service.Spec(service.Options{})) }
