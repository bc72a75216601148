package edgedebug

import (
	"net/url"
	"time"
)

// PathObserved is an observed object's latest entry in KV mesh-observed
// (ObservedEntry), named by the query parameters QueryKind (a kind key of
// libs/layout: "trafficsplit", "pod", ...), QueryNamespace (empty for a
// Namespace) and QueryName. osm convergence OBJECT reads it to find the
// generation that includes the object's change.
const PathObserved = "/v1/observed"

// Query parameters of PathObserved.
const (
	QueryKind      = "kind"
	QueryNamespace = "namespace"
	QueryName      = "name"
)

// ObservedPath is the path of the entry of kind namespace/name.
func ObservedPath(kind, namespace, name string) string {
	return PathObserved + "?" + url.Values{QueryKind: {kind}, QueryNamespace: {namespace}, QueryName: {name}}.Encode()
}

// ObservedEntry is the body of GET ObservedPath: the smi-watcher's latest
// write of the object. An object with no entry at all is a 404.
type ObservedEntry struct {
	Edge      string `json:"edge"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Key is the object's key in mesh-observed.
	Key string `json:"key"`
	// Revision is the entry's mesh-observed revision (stream sequence);
	// the first generation whose observed_revision is at least this, in
	// the same observed epoch, is the first that includes the write.
	Revision uint64 `json:"revision"`
	// Stored is when NATS JetStream stored the write.
	Stored time.Time `json:"stored"`
	// Deleted says the entry is a delete marker: the watcher took the
	// object out of the mesh (deleted, or its namespace left the mesh).
	Deleted bool `json:"deleted,omitempty"`
	// WatcherEpoch is the watcher's sync epoch when it wrote the entry;
	// 0 when the write does not say (a watcher older than the header).
	WatcherEpoch uint64 `json:"watcher_epoch,omitempty"`
	// EventReceived is when the watcher received the Kubernetes event
	// that led to the write; absent for a takeover's reconcile writes.
	EventReceived *time.Time `json:"event_received,omitempty"`
	// UID and ObjectGeneration are the object's metadata as the watcher
	// wrote it (ObjectGeneration is metadata.generation, 0 for kinds
	// without one); empty for a delete.
	UID              string `json:"uid,omitempty"`
	ObjectGeneration int64  `json:"object_generation,omitempty"`
}
