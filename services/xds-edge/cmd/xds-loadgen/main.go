// Command xds-loadgen is the xds-edge's scale harness. It starts an embedded
// NATS, writes a synthetic compiled mesh into it, starts the xds-edge binary
// given by --edge-bin as a separate process, connects --proxies simulated
// delta-xDS proxies to it over mTLS, then times --edits policy edits from the
// generation's commit to their receipt by every proxy, and reports the
// edge's heap per idle proxy.
//
//	go build -o /tmp/xds-edge ./services/xds-edge
//	go run ./services/xds-edge/cmd/xds-loadgen --edge-bin /tmp/xds-edge --proxies 1000
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/services/xds-edge/internal/loadgen"
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
	fs := flag.NewFlagSet("xds-loadgen", flag.ContinueOnError)
	edgeBin := fs.String("edge-bin", "", "path of the built xds-edge binary to start (required)")
	proxies := fs.Int("proxies", 1000, "simulated delta-xDS proxies")
	groups := fs.Int("groups", 100, "proxy groups (identities); proxies are spread over them")
	clusters := fs.Int("clusters-per-group", 20, "clusters (and load assignments) each group names")
	edits := fs.Int("edits", 5, "policy edits to time (each changes a load assignment every proxy holds)")
	conns := fs.Int("conns", 0, "gRPC connections the proxies share; 0 gives each proxy its own")
	keep := fs.Bool("keep", false, "keep the work directory (PKI and the edge's log)")
	nEdges := fs.Int("edges", 1, "edge replicas to start, each its own process; proxies are spread over them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *edgeBin == "" {
		return fmt.Errorf("--edge-bin is required")
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
	nats, err := bus.StartEmbedded(bus.EmbeddedOptions{Passwords: pw})
	if err != nil {
		return err
	}
	defer nats.Shutdown()
	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: string(bus.RoleAdmin), Password: pw[bus.RoleAdmin]})
	if err != nil {
		return err
	}
	defer conn.Close()
	pki, files, err := loadgen.WritePKI(ctx, dir, conn)
	if err != nil {
		return err
	}
	cfg := loadgen.Config{PKI: pki, Bus: conn, Proxies: *proxies, Groups: *groups, ClustersPerGroup: *clusters, Edits: *edits, Conns: *conns}
	if err := loadgen.Seed(ctx, cfg); err != nil {
		return fmt.Errorf("seed the mesh: %w", err)
	}
	for i := range *nEdges {
		e := loadgen.Edge{XDSAddr: freeAddr(), AdminAddr: freeAddr()}
		if i == 0 {
			cfg.XDSAddr, cfg.AdminAddr = e.XDSAddr, e.AdminAddr
		} else {
			cfg.MoreEdges = append(cfg.MoreEdges, e)
		}
		logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("edge-%d.log", i)))
		if err != nil {
			return err
		}
		defer logFile.Close()
		edge := exec.Command(*edgeBin,
			"--nats-url", nats.URL(), "--nats-user", string(bus.RoleEdge),
			"--listen-addr", e.XDSAddr, "--admin-addr", e.AdminAddr, "--log-level", "warn",
			"--tls-cert-file", files.Cert, "--tls-key-file", files.Key, "--tls-client-ca-file", files.Root,
			// The proxies ask for no secret, so the CA is never called.
			"--ca-addr", "127.0.0.1:1", "--ca-client-cert-file", files.Cert, "--ca-client-key-file", files.Key, "--ca-trust-file", files.Root,
			"--edge-id", fmt.Sprintf("loadgen-edge-%d", i), "--stream-rate", "100000", "--stream-burst", "100000", "--max-streams-per-conn", "100000")
		edge.Env = append(os.Environ(), "OSM_NATS_PASSWORD="+pw[bus.RoleEdge])
		edge.Stdout, edge.Stderr = logFile, logFile
		if err := edge.Start(); err != nil {
			return fmt.Errorf("start %s: %w", *edgeBin, err)
		}
		defer func() {
			_ = edge.Process.Signal(syscall.SIGTERM)
			_ = edge.Wait()
		}()
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = loadgen.WaitReady(rctx, e.AdminAddr)
		cancel()
		if err != nil {
			return fmt.Errorf("%w (log: %s)", err, logFile.Name())
		}
	}
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if *keep {
		fmt.Println("work directory:", dir)
	}
	return nil
}

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}
