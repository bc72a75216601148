// Command smi-watcher publishes the Kubernetes and SMI state of the mesh,
// normalised, into the NATS KV bucket mesh-observed. Run it with --help.
package main

import (
	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/service"
)

func main() { app.Main(service.Spec(service.Options{})) }
