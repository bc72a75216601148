package xdsload

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// TestHarnessSmoke runs the harness at toy scale against the xds-edge
// binary, built from services/xds-edge and started as its own process by
// the Launcher, as the xds-loadgen command does: every proxy syncs and
// receives every edit; the steady window, the edge's resident set and the
// bucket's size are measured.
func TestHarnessSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds the xds-edge binary")
	}
	b := newBus(t)
	cfg := Config{PKI: b.pki, Bus: b.admin, Proxies: 20, Groups: 4, ClustersPerGroup: 3, Edits: 2, Conns: 4, Steady: 300 * time.Millisecond}
	if err := Seed(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	// Seed writes a cluster and a load assignment per cluster name, the
	// shared load assignment, a record per group and the generation.
	if msgs, size, err := BucketSize(t.Context(), b.admin, bus.BucketCompiled); err != nil || msgs != 4*3*2+1+4+1 || size == 0 {
		t.Errorf("BucketSize = %d messages, %d bytes, %v; want %d messages and some bytes", msgs, size, err, 4*3*2+1+4+1)
	}
	l := Launcher{Dir: t.TempDir(), NATSURL: b.url, Password: b.pw[bus.RoleEdge], Files: b.files}
	edges, stop, err := l.Edges(t.Context(), buildEdge(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cfg.XDSAddr, cfg.AdminAddr, cfg.PID = edges[0].XDSAddr, edges[0].AdminAddr, edges[0].PID
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	everyEditReachedAll(t, rep, 2, 20)
	var out bytes.Buffer
	rep.Print(&out)
	if !strings.Contains(out.String(), "edit 2: commit→received over 20 proxies") ||
		!strings.Contains(out.String(), "server CPU, steady (connected, no edit) over ") ||
		!strings.Contains(out.String(), "server RSS: ") {
		t.Errorf("report:\n%s", out.String())
	}
	if rep.SteadyWindow < cfg.Steady {
		t.Errorf("steady window %s, want at least %s", rep.SteadyWindow, cfg.Steady)
	}
	// The edge is a Go binary serving gRPC: megabytes resident, and its
	// peak at least what it held once synced.
	if rep.RSSIdle < 1e6 || rep.RSSSynced < 1e6 || rep.RSSPeak < rep.RSSSynced {
		t.Errorf("RSS idle %.0f, synced %.0f, peak %.0f bytes: want megabytes, peak ≥ synced", rep.RSSIdle, rep.RSSSynced, rep.RSSPeak)
	}
}

// buildEdge builds the xds-edge binary into a temporary directory.
func buildEdge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xds-edge")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/openservicemesh/osm/services/xds-edge")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the xds-edge: %v\n%s", err, out)
	}
	return bin
}

// TestStockSmoke runs the harness at toy scale against the stock server
// (go-control-plane's delta server over LinearCache) fed from the same bus:
// every proxy syncs and receives every edit, so the comparison is like
// for like.
func TestStockSmoke(t *testing.T) {
	b := newBus(t)
	cfg := Config{PKI: b.pki, Bus: b.admin, Proxies: 20, Groups: 4, ClustersPerGroup: 3, Edits: 2, Explicit: true}
	if err := Seed(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	sc := StockConfig{Bus: b.connect(t, bus.RoleEdge), ListenAddr: FreeAddr(), AdminAddr: FreeAddr(), CertFile: b.files.Cert, KeyFile: b.files.Key, ClientCAFile: b.files.Root}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- RunStock(ctx, sc) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	rctx, rcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer rcancel()
	if err := WaitReady(rctx, sc.AdminAddr); err != nil {
		t.Fatal(err)
	}
	cfg.XDSAddr, cfg.AdminAddr = sc.ListenAddr, sc.AdminAddr
	rctx2, rcancel2 := context.WithTimeout(t.Context(), 60*time.Second)
	defer rcancel2()
	rep, err := Run(rctx2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	everyEditReachedAll(t, rep, 2, 20)
}

// everyEditReachedAll checks that each of edits edits reached all proxies.
func everyEditReachedAll(t *testing.T, rep *Report, edits, proxies int) {
	t.Helper()
	if rep.Missed != 0 || len(rep.EditLatencies) != edits {
		t.Fatalf("report %+v", rep)
	}
	for _, q := range rep.EditLatencies {
		if q.N != proxies || q.Max <= 0 {
			t.Errorf("edit reached %d proxies (max %s), want %d", q.N, q.Max, proxies)
		}
	}
}

// harnessBus is an embedded NATS with the harness's PKI written into it.
type harnessBus struct {
	// admin writes mesh-compiled, as the harness does.
	admin *bus.Conn
	url   string
	pw    map[bus.Role]string
	pki   *xdstest.CA
	files xdstest.Files
}

// newBus starts an embedded NATS with admin and edge passwords, and writes
// the harness's PKI into it.
func newBus(t *testing.T) *harnessBus {
	t.Helper()
	pw := map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleEdge: "edge-pw"}
	nats, err := bustest.Start(bustest.Options{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	b := &harnessBus{url: nats.URL(), pw: pw}
	b.admin = b.connect(t, bus.RoleAdmin)
	if b.pki, b.files, err = WritePKI(t.Context(), t.TempDir(), b.admin); err != nil {
		t.Fatal(err)
	}
	return b
}

// connect connects to the bus as role.
func (b *harnessBus) connect(t *testing.T, r bus.Role) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(t.Context(), bus.Options{URL: b.url, Role: r, User: string(r), Password: b.pw[r]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
