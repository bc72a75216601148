package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestPartitionIsNoticed: a connection cut off from its server by a
// partition (nothing crosses, nothing is closed: no RST, no FIN) is seen as
// lost within StaleAfter, so that a reader such as the edge turns not
// ready and a writer fails over; after the partition heals the connection
// works again. With nats.go's default pings (every 2 minutes, 2
// outstanding) the loss went unnoticed for 4 to 6 minutes (issue 15, F5).
func TestPartitionIsNoticed(t *testing.T) {
	srv := startServer(t, bustest.Options{})
	cut, err := bustest.NewPartition(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	c := connect(t, bus.Options{URL: cut.URL()})
	st, err := c.EnsureBucket(t.Context(), "partition", bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t.Context()); err != nil {
		t.Fatal(err)
	}

	cut.Cut()
	start := time.Now()
	for c.Check(t.Context()) == nil {
		if time.Since(start) > bus.StaleAfter+2*time.Second {
			t.Fatalf("the partition is not noticed %s after the cut (bus.StaleAfter %s)", time.Since(start).Round(time.Second), bus.StaleAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("partition noticed %s after the cut", time.Since(start).Round(time.Millisecond))

	cut.Heal()
	healed := time.Now()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := st.Put(ctx, "k", wrapperspb.String("v"))
		cancel()
		if err == nil && c.Check(t.Context()) == nil {
			break
		}
		if time.Since(healed) > 10*time.Second {
			t.Fatalf("no write 10 s after the partition healed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("writing again %s after the heal", time.Since(healed).Round(time.Millisecond))
}
