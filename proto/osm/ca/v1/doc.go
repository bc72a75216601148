// Package cav1 holds the Go types and gRPC stubs generated from
// osm/ca/v1/ca.proto: the API of the cert-authority (Sign, GetTrustBundle,
// WatchTrustBundle, Bootstrap). Regenerate with `scripts/proto.sh gen`.
package cav1
