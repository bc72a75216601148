// Package proxyless carries real gRPC traffic through the mesh: the
// bookstore demo's proxyless gRPC servers and clients (tests/cmd/
// bookstore-grpc) configured by the whole control plane (kube-apiserver
// harness, smi-watcher, policy-compiler with --proxyless-grpc, xds-edge,
// cert-authority), whose policies decide whether the calls succeed.
//
// Pod IPs carry the traffic, so the tests run in a network namespace of
// their own (package netns) with the pod IPs on its loopback; without the
// privilege to make one (root; CI runs as root) they are skipped.
package proxyless
