package loadgen

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/services/xds-edge/internal/edge"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
	"github.com/openservicemesh/osm/services/xds-edge/xdstest"
)

// TestHarnessSmoke runs the harness at toy scale against an in-process
// edge: every proxy syncs and receives every edit.
func TestHarnessSmoke(t *testing.T) {
	admin, connect, pki, _ := newBus(t)
	cfg := Config{PKI: pki, Bus: admin, Proxies: 20, Groups: 4, ClustersPerGroup: 3, Edits: 2, Conns: 4}
	if err := Seed(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	tc, err := pki.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e, err := edge.New(edge.Deps{Log: logrus.NewEntry(log), Conn: connect(bus.RoleEdge), Listener: ln, EdgeID: "smoke", TrustDomain: "cluster.local",
		GRPC:              xds.GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Second},
		NATSLostThreshold: time.Minute, StopGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for e.CheckSync(t.Context()) != nil || !e.Server().Serving() {
		time.Sleep(10 * time.Millisecond)
	}
	cfg.XDSAddr = ln.Addr().String()
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	everyEditReachedAll(t, rep, 2, 20)
	var out bytes.Buffer
	rep.Print(&out)
	if !strings.Contains(out.String(), "edit 2: commit→received over 20 proxies") {
		t.Errorf("report:\n%s", out.String())
	}
}

// TestStockSmoke runs the harness at toy scale against the stock server
// (go-control-plane's delta server over LinearCache) fed from the same bus:
// every proxy syncs and receives every edit, so the comparison is like
// for like.
func TestStockSmoke(t *testing.T) {
	admin, connect, pki, files := newBus(t)
	cfg := Config{PKI: pki, Bus: admin, Proxies: 20, Groups: 4, ClustersPerGroup: 3, Edits: 2, Explicit: true}
	if err := Seed(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	sc := StockConfig{Bus: connect(bus.RoleEdge), ListenAddr: freeAddr(t), AdminAddr: freeAddr(t), CertFile: files.Cert, KeyFile: files.Key, ClientCAFile: files.Root}
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

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newBus starts an embedded NATS with admin and edge passwords, and writes
// the harness's PKI into it: the admin connection, a way to connect as a
// role, the PKI and its files.
func newBus(t *testing.T) (*bus.Conn, func(bus.Role) *bus.Conn, *xdstest.CA, Files) {
	t.Helper()
	pw := map[bus.Role]string{bus.RoleAdmin: "admin-pw", bus.RoleEdge: "edge-pw"}
	nats, err := bus.StartEmbedded(bus.EmbeddedOptions{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	connect := func(r bus.Role) *bus.Conn {
		c, err := bus.Connect(t.Context(), bus.Options{URL: nats.URL(), Role: r, User: string(r), Password: pw[r]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin := connect(bus.RoleAdmin)
	pki, files, err := WritePKI(t.Context(), t.TempDir(), admin)
	if err != nil {
		t.Fatal(err)
	}
	return admin, connect, pki, files
}
