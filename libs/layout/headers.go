package layout

// Headers the smi-watcher adds to its mesh-observed writes, beside the
// trace context. They are not part of the value (a reader that does not
// know them ignores them, and a write is still skipped when only they
// would differ); the xds-edge's debug API reads them for osm convergence.
const (
	// HeaderWatcherEpoch is the watcher's sync epoch (SyncMarker.epoch)
	// when it wrote the key, in decimal: the generations that include the
	// write are those of this observed epoch.
	HeaderWatcherEpoch = "Osm-Watcher-Epoch"
	// HeaderEventTime is when the watcher received the Kubernetes event
	// that led to the write (RFC 3339, nanoseconds, UTC); absent on the
	// writes of a takeover's reconcile, which no event caused.
	HeaderEventTime = "Osm-Event-Time"
)
