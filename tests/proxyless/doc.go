// Package proxyless carries real gRPC traffic through the mesh: the
// bookstore demo's proxyless gRPC servers and clients (tests/cmd/
// bookstore-grpc) configured by the whole control plane (kube-apiserver
// harness, injector-webhook, smi-watcher, policy-compiler with
// --proxyless-grpc, xds-edge, cert-authority), whose policies decide
// whether the calls succeed. TestProxylessGRPCBookstore runs the demo
// (access, splits, rotations, failover); TestProxylessGRPCRetry a Retry,
// in a mesh of its own (its namespaces monitored by osm-retry) in the
// same cluster, against a server failing each call's first attempts;
// TestProxylessGRPCOutlierDetection an UpstreamTrafficSetting's
// failure-percentage outlier detection ejecting the one of two servers
// that fails every call, and its consecutive 5xx, which gRPC-Go does not
// have, ejecting nothing with a warning (mesh osm-outlier).
//
// The pods go through the real admission chain: created through the
// apiserver with the annotation openservicemesh.io/proxyless: grpc, the
// injector adds their Secret volume and environment and its writer
// creates the bootstrap Secret. There is no kubelet: stack.MountProxyless
// plays its part, writing the Secret's files into a directory per pod (the
// kubelet's ..data swap, again on every change of the Secret) with the
// mount path /etc/osm/grpc rewritten to that directory in the environment
// and the bootstrap, and each program runs with the pod's environment.
// Certificate and root rotations change the Secrets (the test issues the
// new certificates from the CA and patches them in; the injector itself
// rewrites ca.crt and spiffe-bundle.json when the CA's bundle changes), and
// the stand-in's sync and gRPC's file watchers (the injector's
// refresh_interval, 10 s) carry them to the programs. Renewal by the
// injector alone (--cert-ttl at least 1m, so every 30 s) would add a wait
// of up to 30 s for each rotation step, past the package's time budget.
//
// Pod IPs carry the traffic, so the tests run in a network namespace of
// their own (package netns) with the pod IPs on its loopback; without the
// privilege to make one (root; CI runs as root) they are skipped.
package proxyless
