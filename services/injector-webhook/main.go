// Command injector-webhook is OSM's sidecar injector: a mutating admission
// webhook that adds the iptables init container, the Envoy sidecar and its
// bootstrap Secret to pods in meshed namespaces.
package main

import (
	"context"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/injector"
)

func main() {
	var c injector.Config
	app.Main(app.Spec{
		Name: "injector-webhook",
		Summary: "OSM's sidecar injector: a mutating admission webhook that adds the iptables init container,\n" +
			"the Envoy sidecar and its bootstrap Secret (with a client certificate signed by the\n" +
			"cert-authority) to pods created in namespaces labelled openservicemesh.io/monitored-by.\n\n" +
			"The certificate is issued during admission; the Secret is written just after the webhook\n" +
			"answers (the kubelet retries the volume mount until it exists). A reconciler reissues\n" +
			"Secrets lost to a restart, makes each Secret owned by its pod so that it is deleted with\n" +
			"it, and deletes Secrets left without a pod (see --bootstrap-*).",
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return injector.Run(ctx, rt, c) },
	})
}
