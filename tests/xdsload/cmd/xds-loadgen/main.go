// Command xds-loadgen is the xds-edge's scale harness. It starts an embedded
// NATS, writes a synthetic compiled mesh into it, starts the xds-edge binary
// given by --edge-bin as a separate process, connects --proxies simulated
// delta-xDS proxies to it over mTLS, then times --edits policy edits from the
// generation's commit to their receipt by every proxy, and reports the
// edge's heap per idle proxy. With --server=both it then measures
// go-control-plane's stock delta server (LinearCache behind a MuxCache, run
// as this binary's stock-server subcommand) in the same run, on the same
// mesh and proxies, and prints the ratio of their p99s.
//
//	go build -o /tmp/xds-edge ./services/xds-edge
//	go run ./tests/xdsload/cmd/xds-loadgen --edge-bin /tmp/xds-edge --proxies 1000
//	go run ./tests/xdsload/cmd/xds-loadgen --edge-bin /tmp/xds-edge --proxies 10000 --server both
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/tests/xdsload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "xds-loadgen: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "stock-server" {
		return runStock(ctx, args[1:])
	}
	fs := flag.NewFlagSet("xds-loadgen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	edgeBin := fs.String("edge-bin", "", "path of the built xds-edge binary to start (required unless --server=stock)")
	server := fs.String("server", "edge", "what serves the proxies: edge (the xds-edge binary), stock (go-control-plane's delta server and LinearCache, in a child process), or both (edge, then stock, in one run, and their ratio)")
	proxies := fs.Int("proxies", 1000, "simulated xDS proxies (delta unless --sotw)")
	groups := fs.Int("groups", 100, "proxy groups (identities); proxies are spread over them")
	clusters := fs.Int("clusters-per-group", 20, "clusters (and load assignments) each group names")
	edits := fs.Int("edits", 5, "policy edits to time (each changes a load assignment every proxy holds)")
	conns := fs.Int("conns", 0, "gRPC connections the proxies share; 0 gives each proxy its own")
	keep := fs.Bool("keep", false, "keep the work directory (PKI and the servers' logs)")
	nEdges := fs.Int("edges", 1, "edge replicas to start, each its own process; proxies are spread over them (edge only)")
	explicit := fs.Bool("explicit", false, "proxies subscribe to their names one by one instead of as a wildcard (always on for stock and both)")
	sotw := fs.Bool("sotw", false, "proxies use state-of-the-world ADS instead of delta (edge only; every push of a type then carries the proxy's whole view of it)")
	cpuProfile := fs.String("cpu-profile", "", "write the (first) edge's CPU profile over the edits to this file, for `go tool pprof` (edge only)")
	steady := fs.Duration("steady", 0, "after the initial sync, measure the servers' CPU over this window with every proxy connected and no edit (e.g. 60s)")
	heapProfile := fs.String("heap-profile", "", "write the (first) edge's heap profile to this file once every proxy is synced, for `go tool pprof` (edge only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *server {
	case "edge", "both":
		if *edgeBin == "" {
			return fmt.Errorf("--edge-bin is required with --server=%s", *server)
		}
	case "stock":
	default:
		return fmt.Errorf("--server must be edge, stock or both, not %q", *server)
	}
	if *sotw && *server != "edge" {
		return fmt.Errorf("--sotw needs --server=edge: the stock baseline is a delta server")
	}
	if *nEdges < 1 {
		return fmt.Errorf("--edges must be at least 1")
	}
	if *proxies < 1 || *groups < 1 || *clusters < 0 || *edits < 0 {
		return fmt.Errorf("--proxies and --groups must be positive, --clusters-per-group and --edits not negative")
	}
	dir, err := os.MkdirTemp("", "xds-loadgen-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	pw := map[bus.Role]string{bus.RoleAdmin: secret(), bus.RoleEdge: secret()}
	nats, err := bustest.Start(bustest.Options{Passwords: pw})
	if err != nil {
		return err
	}
	defer nats.Shutdown()
	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: string(bus.RoleAdmin), Password: pw[bus.RoleAdmin]})
	if err != nil {
		return err
	}
	defer conn.Close()
	pki, files, err := xdsload.WritePKI(ctx, dir, conn)
	if err != nil {
		return err
	}
	cfg := xdsload.Config{PKI: pki, Bus: conn, Proxies: *proxies, Groups: *groups, ClustersPerGroup: *clusters, Edits: *edits, Conns: *conns,
		Explicit: *explicit || *server != "edge", SotW: *sotw}
	rss0, _ := xdsload.SelfRSS()
	if err := xdsload.Seed(ctx, cfg); err != nil {
		return fmt.Errorf("seed the mesh: %w", err)
	}
	msgs, bytes, err := xdsload.BucketSize(ctx, conn, bus.BucketCompiled)
	if err != nil {
		return err
	}
	rss1, _ := xdsload.SelfRSS()
	fmt.Printf("== nats ==\nmesh: %d clusters (and as many load assignments) in %d groups\n", *groups**clusters, *groups)
	fmt.Printf("bucket %s: %d messages, %.2f MB stored (%.1f KB per cluster)\n", bus.BucketCompiled, msgs, float64(bytes)/1e6, float64(bytes)/1e3/float64(max(1, *groups**clusters)))
	fmt.Printf("loadgen RSS (embedded nats-server and the writer): %.1f MB before stocking, %.1f MB after\n", rss0/1e6, rss1/1e6)
	l := xdsload.Launcher{Dir: dir, NATSURL: nats.URL(), Password: pw[bus.RoleEdge], Files: files}
	var reports []*xdsload.Report
	for _, kind := range strings.Split(map[string]string{"edge": "edge", "stock": "stock", "both": "edge,stock"}[*server], ",") {
		var servers []xdsload.Edge
		var stop func()
		if kind == "edge" {
			servers, stop, err = l.Edges(ctx, *edgeBin, *nEdges)
		} else {
			servers, stop, err = stockServer(ctx, l)
		}
		if err != nil {
			return err
		}
		c := cfg
		c.XDSAddr, c.AdminAddr, c.PID, c.MoreEdges = servers[0].XDSAddr, servers[0].AdminAddr, servers[0].PID, servers[1:]
		c.GenBase = uint64(len(reports) * *edits)
		c.Steady = *steady
		if kind == "edge" {
			c.HeapProfile, c.CPUProfile = *heapProfile, *cpuProfile
		}
		rep, err := xdsload.Run(ctx, c)
		stop()
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		fmt.Printf("== %s ==\n", kind)
		rep.Print(os.Stdout)
		reports = append(reports, rep)
	}
	if len(reports) == 2 {
		e, s := reports[0].WorstP99(), reports[1].WorstP99()
		fmt.Printf("== comparison ==\nworst edit p99: edge %s, stock %s: edge/stock = %.2f\n", e.Round(time.Millisecond), s.Round(time.Millisecond), e.Seconds()/s.Seconds())
		if ec, sc := reports[0].ServerCPUPerEdit, reports[1].ServerCPUPerEdit; ec > 0 && sc > 0 {
			fmt.Printf("server CPU per edit: edge %s, stock %s: edge/stock = %.2f\n", ec.Round(time.Millisecond), sc.Round(time.Millisecond), ec.Seconds()/sc.Seconds())
		}
	}
	if *keep {
		fmt.Println("work directory:", dir)
	}
	return nil
}

const usage = `xds-loadgen: the xds-edge's scale harness. It starts an embedded NATS, writes a
synthetic compiled mesh into it, starts the servers as separate processes,
connects --proxies simulated delta-xDS (or, with --sotw, state-of-the-world)
proxies over mTLS, then times --edits
endpoint changes from the generation's commit to their receipt by every proxy,
and reports the server's heap per idle proxy.

With --server=both it measures the xds-edge and then go-control-plane's stock
delta server over LinearCache (started as "xds-loadgen stock-server"), fed the
same mesh from the same NATS, with the same proxies, and prints their ratio.

Flags:
`

// stockServer starts this binary's stock-server subcommand.
func stockServer(ctx context.Context, l xdsload.Launcher) ([]xdsload.Edge, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	return l.Stock(ctx, self)
}

// runStock is the stock-server subcommand: go-control-plane's delta server
// over LinearCache, fed from mesh-compiled. The NATS password (edge role)
// comes from OSM_NATS_PASSWORD.
func runStock(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("xds-loadgen stock-server", flag.ContinueOnError)
	natsURL := fs.String("nats-url", "", "NATS URL (required)")
	var c xdsload.StockConfig
	fs.StringVar(&c.ListenAddr, "listen-addr", "127.0.0.1:15128", "ADS listen address (mTLS)")
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:15129", "admin address: /readyz and /metrics")
	fs.StringVar(&c.CertFile, "tls-cert-file", "", "serving certificate (PEM)")
	fs.StringVar(&c.KeyFile, "tls-key-file", "", "serving key (PEM)")
	fs.StringVar(&c.ClientCAFile, "tls-client-ca-file", "", "root client certificates must chain to (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, err := bus.Connect(ctx, bus.Options{URL: *natsURL, Role: bus.RoleEdge, User: string(bus.RoleEdge), Password: os.Getenv("OSM_NATS_PASSWORD")})
	if err != nil {
		return err
	}
	defer conn.Close()
	c.Bus = conn
	return xdsload.RunStock(ctx, c)
}

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
