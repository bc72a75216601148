package bus_test

import (
	"errors"
	"testing"

	"github.com/openservicemesh/osm/libs/bus"
)

// TestLastReadsHeadersAndDeletes: WithHeader's headers travel with a
// write and Last reads them back with the revision and stored time; a
// value unchanged but for its headers is not written again; Last sees a
// delete marker, and no message at all is ErrNotFound.
func TestLastReadsHeadersAndDeletes(t *testing.T) {
	_, st, w := watched(t, bus.BucketObserved)
	ctx := t.Context()
	next(t, w) // initialized
	hctx := bus.WithHeader(bus.WithHeader(ctx, "Osm-A", "1"), "Osm-B", "2")
	rev, wrote, err := st.PutIfChanged(hctx, "k", str("v"))
	if err != nil || !wrote {
		t.Fatalf("put: %v %v", wrote, err)
	}
	e, err := st.Last(ctx, "k")
	if err != nil || e.Revision != rev || e.Deleted || string(e.Value) == "" || e.Time.IsZero() || e.Header.Get("Osm-A") != "1" || e.Header.Get("Osm-B") != "2" {
		t.Fatalf("Last: %+v %v; want revision %d with headers Osm-A=1, Osm-B=2", e, err, rev)
	}
	next(t, w)
	if _, wrote, err := st.PutIfChanged(bus.WithHeader(ctx, "Osm-A", "other"), "k", str("v")); err != nil || wrote {
		t.Fatalf("put of the same value with other headers: wrote %v, %v; want no write", wrote, err)
	}
	expectQuiet(t, w)
	if err := st.Delete(bus.WithHeader(ctx, "Osm-A", "3"), "k"); err != nil {
		t.Fatal(err)
	}
	if e, err := st.Last(ctx, "k"); err != nil || !e.Deleted || e.Value != nil || e.Revision <= rev || e.Header.Get("Osm-A") != "3" {
		t.Fatalf("Last after the delete: %+v %v; want a delete marker with its header", e, err)
	}
	if _, err := st.Last(ctx, "absent"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Last of an absent key: %v; want ErrNotFound", err)
	}
}
