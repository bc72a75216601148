// Package chart tests the Helm umbrella chart deploy/charts/osm through the
// Helm v4 SDK: lint, golden renders, schema errors, and a real install,
// upgrade, rollback and uninstall against the kube-apiserver harness
// (tests/kube). It is its own module, outside go.work, so that Helm's
// dependencies do not shift the versions the workspace builds with.
package chart
