package apptest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPickAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
	}
}

func TestPollReturnsTheLastError(t *testing.T) {
	calls := 0
	if err := Poll(t.Context(), time.Second, func() error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("a condition that holds: err %v after %d calls, want nil after 1", err, calls)
	}
	last := errors.New("still three replicas")
	err := Poll(t.Context(), 120*time.Millisecond, func() error { return last })
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "not within 120ms") {
		t.Fatalf("err = %v, want the last error, wrapped with the time waited", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Poll(ctx, time.Hour, func() error { return last }); !errors.Is(err, context.Canceled) || !errors.Is(err, last) {
		t.Fatalf("err = %v, want the context's error and the last one", err)
	}
}

func TestSampleValue(t *testing.T) {
	text := `# HELP osm_x a counter
osm_x_total{kind="pod",op="put"} 3
osm_x_total{kind="service",op="put"} 7
osm_y 1.5
`
	for _, c := range []struct {
		name, match string
		want        float64
	}{{"osm_x_total", `kind="service"`, 7}, {"osm_x_total", "", 3}, {"osm_y", "", 1.5}} {
		got, err := SampleValue(text, c.name, c.match)
		if err != nil || got != c.want {
			t.Errorf("%s{%s} = %v, %v; want %v", c.name, c.match, got, err, c.want)
		}
	}
	if _, err := SampleValue(text, "osm_x", ""); err == nil {
		t.Error("osm_x matched a sample of osm_x_total")
	}
}
