// Command injector-webhook is OSM's sidecar injector: a mutating admission
// webhook that adds the iptables init container, the Envoy sidecar and its
// bootstrap Secret to pods in meshed namespaces.
package main

import (
	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/service"
)

func main() { app.Main(service.Spec(service.Options{})) }
