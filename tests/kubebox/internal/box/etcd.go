package box

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startEtcd starts a single-member etcd in this process, listening for
// clients on addr:port (port 0 picks a free one). It returns the running
// server and the client URL to hand to kube-apiserver.
func startEtcd(ctx context.Context, dataDir, logFile, addr string, port int, fsync bool) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Name = "kubebox"
	cfg.Dir = dataDir
	cfg.UnsafeNoFsync = !fsync
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{logFile}
	// NewConfig leaves this at 0, which logs every request as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	// etcd dials its own advertised client URL (for the gRPC gateway), so
	// both ports must be real: kernel-chosen free ports keep parallel
	// clusters from colliding.
	peerPort, err := freePort(addr)
	if err != nil {
		return nil, "", err
	}
	if port == 0 {
		if port, err = freePort(addr); err != nil {
			return nil, "", err
		}
	}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort(addr, strconv.Itoa(peerPort))}
	client := url.URL{Scheme: "http", Host: net.JoinHostPort(addr, strconv.Itoa(port))}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start etcd (log: %s): %w", logFile, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("etcd failed (log: %s): %w", logFile, err)
	case <-time.After(time.Minute):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after 1m (log: %s)", logFile)
	case <-ctx.Done():
		e.Close()
		return nil, "", ctx.Err()
	}
	if len(e.Clients) == 0 {
		e.Close()
		return nil, "", fmt.Errorf("etcd has no client listener")
	}
	return e, "http://" + e.Clients[0].Addr().String(), nil
}

// etcdDir is where etcd keeps its data inside the kubebox data dir.
func etcdDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }
