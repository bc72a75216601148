package xdsload

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// WritePKI makes a throw-away mesh root and the edge's serving (and CA
// client) certificate in dir, and writes the trust bundle into mesh-trust.
func WritePKI(ctx context.Context, dir string, conn *bus.Conn) (*xdstest.CA, xdstest.Files, error) {
	ca, err := xdstest.NewCA("loadgen-root")
	if err != nil {
		return nil, xdstest.Files{}, err
	}
	f, err := ca.WriteFiles(dir, "edge", "spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		return nil, xdstest.Files{}, err
	}
	trust, err := conn.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{})
	if err != nil {
		return nil, xdstest.Files{}, err
	}
	if _, err := trust.Put(ctx, layout.BundleKey, ca.Bundle()); err != nil {
		return nil, xdstest.Files{}, err
	}
	return ca, f, nil
}

// WaitReady polls the edge's /readyz until it answers 200 or ctx ends.
func WaitReady(ctx context.Context, adminAddr string) error {
	if err := apptest.Poll(ctx, 24*time.Hour, func() error { return apptest.Ready(adminAddr) }); err != nil {
		return fmt.Errorf("edge at %s not ready: %w", adminAddr, err)
	}
	return nil
}

// Launcher starts the servers the proxies connect to, each as its own
// process fed from the harness's NATS, with the harness's PKI.
type Launcher struct {
	// Dir receives each server's log, <name>.log.
	Dir string
	// NATSURL is the harness's NATS; Password is the edge role's.
	NATSURL, Password string
	// Files are the PKI files from WritePKI.
	Files xdstest.Files
}

// start runs one server process, logging to Dir/<name>.log, and waits for
// its /readyz. It returns the function that stops the process.
func (l Launcher) start(ctx context.Context, name string, e *Edge, cmd *exec.Cmd) (func(), error) {
	logFile, err := os.Create(filepath.Join(l.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "OSM_NATS_PASSWORD="+l.Password)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logFile.Close()
	}
	e.PID = cmd.Process.Pid
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = WaitReady(rctx, e.AdminAddr)
	cancel()
	if err != nil {
		stop()
		return nil, fmt.Errorf("%w (log: %s)", err, logFile.Name())
	}
	return stop, nil
}

// Edges starts n replicas of the xds-edge binary bin and waits until each
// is ready; the function returned stops them all.
func (l Launcher) Edges(ctx context.Context, bin string, n int) ([]Edge, func(), error) {
	var out []Edge
	var stops []func()
	stopAll := func() {
		for _, s := range stops {
			s()
		}
	}
	for i := range n {
		e := Edge{XDSAddr: FreeAddr(), AdminAddr: FreeAddr()}
		cmd := exec.Command(bin,
			"--nats-url", l.NATSURL, "--nats-user", string(bus.RoleEdge),
			"--listen-addr", e.XDSAddr, "--admin-addr", e.AdminAddr, "--log-level", "warn",
			// pprof lets the harness force a collection before it reads the heap.
			"--enable-pprof",
			"--tls-cert-file", l.Files.Cert, "--tls-key-file", l.Files.Key, "--tls-client-ca-file", l.Files.Root,
			// The proxies ask for no secret, so the CA is never called.
			"--ca-addr", "127.0.0.1:1", "--ca-client-cert-file", l.Files.Cert, "--ca-client-key-file", l.Files.Key, "--ca-trust-file", l.Files.Root,
			"--pod-name", fmt.Sprintf("loadgen-edge-%d", i), "--stream-rate", "100000", "--stream-burst", "100000", "--max-streams-per-conn", "100000")
		stop, err := l.start(ctx, fmt.Sprintf("edge-%d", i), &e, cmd)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, stop)
		out = append(out, e)
	}
	return out, stopAll, nil
}

// Stock starts the stock server as the stock-server subcommand of the
// xds-loadgen binary bin and waits until it is ready; the function
// returned stops it.
func (l Launcher) Stock(ctx context.Context, bin string) ([]Edge, func(), error) {
	e := Edge{XDSAddr: FreeAddr(), AdminAddr: FreeAddr()}
	cmd := exec.Command(bin, "stock-server", "--nats-url", l.NATSURL, "--listen-addr", e.XDSAddr, "--admin-addr", e.AdminAddr,
		"--tls-cert-file", l.Files.Cert, "--tls-key-file", l.Files.Key, "--tls-client-ca-file", l.Files.Root)
	stop, err := l.start(ctx, "stock", &e, cmd)
	if err != nil {
		return nil, nil, err
	}
	return []Edge{e}, stop, nil
}

// FreeAddr returns a free loopback address, never one it returned before in
// this process ("127.0.0.1:0" when none could be found).
func FreeAddr() string {
	addr, err := apptest.PickAddr()
	if err != nil {
		return "127.0.0.1:0"
	}
	return addr
}

// BucketSize is what the NATS server stores for a KV bucket: its stream's
// messages (records, with history) and bytes.
func BucketSize(ctx context.Context, conn *bus.Conn, bucket string) (msgs, bytes uint64, err error) {
	st, err := conn.JetStream().Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// SelfRSS is this process's resident set (VmRSS) in bytes; with the
// embedded NATS server, it holds that server.
func SelfRSS() (float64, error) { return procStatusKB(0, "VmRSS:") }
