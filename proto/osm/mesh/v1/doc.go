// Package meshv1 holds the Go types generated from osm/mesh/v1/*.proto: the
// NATS contract between OSM's control-plane components. Every value in the KV
// buckets mesh-observed, mesh-compiled and mesh-trust, and every event under
// mesh.status.>, is one of these messages. The .proto files document each
// message and field; regenerate with `scripts/proto.sh gen`.
package meshv1
