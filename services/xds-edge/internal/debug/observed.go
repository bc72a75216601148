package debug

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// ObservedReader reads the latest entry of a key of KV mesh-observed.
type ObservedReader interface {
	Last(ctx context.Context, key string) (bus.Entry, error)
}

// ObservedBucket is an ObservedReader of the bucket on conn, opened at its
// first use (the edge does not wait for mesh-observed to start).
func ObservedBucket(conn *bus.Conn) ObservedReader { return &observedBucket{conn: conn} }

type observedBucket struct {
	conn  *bus.Conn
	mu    sync.Mutex
	store *bus.Store
}

func (b *observedBucket) Last(ctx context.Context, key string) (bus.Entry, error) {
	b.mu.Lock()
	st := b.store
	b.mu.Unlock()
	if st == nil {
		var err error
		if st, err = b.conn.Bucket(ctx, bus.BucketObserved); err != nil {
			return bus.Entry{}, err
		}
		b.mu.Lock()
		b.store = st
		b.mu.Unlock()
	}
	return st.Last(ctx, key)
}

// observed serves GET edgedebug.PathObserved: the smi-watcher's latest
// write of one object, with the headers it wrote it with.
func (o Options) observed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, ns, name := q.Get(edgedebug.QueryKind), q.Get(edgedebug.QueryNamespace), q.Get(edgedebug.QueryName)
	var key string
	switch {
	case layout.NewObserved(kind) == nil:
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s %q is not a kind the smi-watcher writes", edgedebug.QueryKind, kind))
		return
	case name == "":
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s is empty", edgedebug.QueryName))
		return
	case kind == layout.KindNamespace:
		key, ns = layout.NamespaceKey(name), ""
	case ns == "":
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s is empty: a %s is namespaced", edgedebug.QueryNamespace, layout.KindName(kind)))
		return
	default:
		key = layout.ObservedKey(kind, ns, name)
	}
	if o.Observed == nil {
		writeError(w, http.StatusNotImplemented, fmt.Errorf("edge %s does not read mesh-observed", o.EdgeID))
		return
	}
	e, err := o.Observed.Last(r.Context(), key)
	if errors.Is(err, bus.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Errorf("mesh-observed has no entry %s: the smi-watcher never wrote %s %s (its namespace is not in the mesh, or it is not the mesh's)",
			key, layout.KindName(kind), objectName(ns, name)))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Errorf("read mesh-observed: %w", err))
		return
	}
	out := edgedebug.ObservedEntry{Edge: o.EdgeID, Kind: kind, Namespace: ns, Name: name, Key: key,
		Revision: e.Revision, Stored: e.Time.UTC(), Deleted: e.Deleted}
	if v := e.Header.Get(layout.HeaderWatcherEpoch); v != "" {
		out.WatcherEpoch, _ = strconv.ParseUint(v, 10, 64)
	}
	if v := e.Header.Get(layout.HeaderEventTime); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			t = t.UTC()
			out.EventReceived = &t
		}
	}
	if !e.Deleted {
		m := layout.NewObserved(kind)
		if err := proto.Unmarshal(e.Value, m); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Errorf("decode %s: %w", key, err))
			return
		}
		if mm, ok := m.(interface{ GetMeta() *meshv1.ObjectMeta }); ok {
			out.UID, out.ObjectGeneration = mm.GetMeta().GetUid(), mm.GetMeta().GetGeneration()
		}
	}
	writeJSON(w, out)
}

func objectName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}
