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
			"Serving certificate: by default the cert-authority issues it through Bootstrap (credential\n" +
			"--ca-bootstrap-token-file) for the webhook Service's DNS names, and the injector renews it at\n" +
			"half its lifetime and keeps the webhook configuration's caBundle equal to the CA's trust\n" +
			"bundle. --tls-cert-file and --tls-key-file, when set, take precedence: those files are served\n" +
			"and --tls-ca-file becomes the caBundle; the cert-authority is then not asked.\n\n" +
			"Bootstrap Secrets: the certificate is issued during admission; the Secret is written just after\n" +
			"the webhook answers (the kubelet retries the volume mount until it exists). A reconciler\n" +
			"reissues Secrets lost to a restart, makes each Secret owned by its pod so that it is deleted\n" +
			"with it, and deletes Secrets left without a pod (see --bootstrap-*).",
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return injector.Run(ctx, rt, c) },
	})
}
