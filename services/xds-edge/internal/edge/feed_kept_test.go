package edge

import (
	"context"
	"io"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// TestFeedIgnoresKeptVersions: the compiler's accepted.* records (a
// rejected policy's last accepted version, kept for its successor) are
// nothing to serve: the feed stages nothing and warns about nothing.
func TestFeedIgnoresKeptVersions(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	hook := logtest.NewLocal(log)
	target := &fakeTarget{pool: pool.New()}
	f := &feed{log: logrus.NewEntry(log), target: target}
	key := layout.AcceptedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v1")
	b, err := proto.Marshal(&meshv1.KeptVersion{Kind: layout.KindTrafficTarget, Namespace: "bookstore", Name: "bookbuyer-access-bookstore-v1", Format: 1, Value: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	f.compiledEvent(bus.Event{Kind: bus.EventPut, Key: key, Value: b, Context: context.Background()})
	f.compiledEvent(bus.Event{Kind: bus.EventDelete, Key: key, Context: context.Background()})
	if n := target.pool.Staged(); n != 0 {
		t.Fatalf("staged %d keys", n)
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged %s: %s %v", e.Level, e.Message, e.Data)
		}
	}
}
