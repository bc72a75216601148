package box

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Ready is the content of the ready file.
type Ready struct {
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string `json:"kubeconfig"`
	// Server is the kube-apiserver URL.
	Server string `json:"server"`
	// Etcd is the embedded etcd's client URL.
	Etcd string `json:"etcd"`
	// PID is the kubebox process id.
	PID int `json:"pid"`
}

// Run starts the control plane, reports readiness on stdout and in the ready
// file, and blocks until ctx is cancelled or a component fails. It then stops
// the controller manager, the apiserver and etcd, in that order. Progress is
// logged to log.
func Run(ctx context.Context, o Options, stdout io.Writer, log *slog.Logger) (err error) {
	if err := o.complete(); err != nil {
		return err
	}
	addr := netip.MustParseAddr(o.Address)
	for _, d := range []string{o.DataDir, o.LogDir, filepath.Dir(o.Kubeconfig), filepath.Dir(o.ReadyFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// A ready file left by a killed run must not fool a reader.
	if err := os.Remove(o.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}

	keys, err := ensurePKI(filepath.Join(o.DataDir, "pki"), addr, o.ServiceCIDR, o.AdminToken)
	if err != nil {
		return err
	}

	start := time.Now()
	log.Info("starting etcd", "data_dir", etcdDir(o.DataDir))
	etcd, etcdURL, err := startEtcd(ctx, etcdDir(o.DataDir), filepath.Join(o.LogDir, "etcd.log"), o.Address, o.EtcdPort, o.EtcdFsync)
	if err != nil {
		return err
	}
	defer func() {
		etcd.Close()
		log.Info("etcd stopped")
	}()

	port := o.SecurePort
	if port == 0 {
		if port, err = freePort(o.Address); err != nil {
			return err
		}
	}
	server := "https://" + net.JoinHostPort(o.Address, strconv.Itoa(port))
	if err := writeKubeconfig(o.Kubeconfig, server, keys.caCert, keys.adminToken); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}

	log.Info("starting kube-apiserver", "server", server)
	apiserver, err := startChild("kube-apiserver", o.Executable,
		append([]string{"apiserver"}, apiserverArgs(o, keys, etcdURL, port)...),
		filepath.Join(o.LogDir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := apiserver.stop(o.ShutdownTimeout); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		log.Info("kube-apiserver stopped")
	}()

	probe, err := newProber(server, keys.caCert, keys.adminToken)
	if err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	if err := waitFor(readyCtx, apiserver, "kube-apiserver /readyz", probe.readyz); err != nil {
		return err
	}

	log.Info("starting kube-controller-manager", "controllers", strings.Join(o.Controllers, ","))
	kcm, err := startChild("kube-controller-manager", o.Executable,
		append([]string{"controller-manager"}, controllerManagerArgs(o, keys)...),
		filepath.Join(o.LogDir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := kcm.stop(o.ShutdownTimeout); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		log.Info("kube-controller-manager stopped")
	}()
	if containsController(o.Controllers, "serviceaccount-controller") {
		if err := waitFor(readyCtx, kcm, "default ServiceAccount", probe.defaultServiceAccount); err != nil {
			return err
		}
	}
	cancel()

	ready := Ready{Kubeconfig: o.Kubeconfig, Server: server, Etcd: etcdURL, PID: os.Getpid()}
	b, err := json.MarshalIndent(ready, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(o.ReadyFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	defer os.Remove(o.ReadyFile)
	log.Info("control plane ready", "kubeconfig", o.Kubeconfig, "server", server,
		"elapsed", time.Since(start).Round(time.Millisecond).String())
	fmt.Fprintf(stdout, "ready kubeconfig=%s server=%s\n", o.Kubeconfig, server)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case <-apiserver.done:
		return apiserver.exited()
	case <-kcm.done:
		return kcm.exited()
	case err := <-etcd.Err():
		return fmt.Errorf("etcd failed: %w", err)
	}
}

func apiserverArgs(o Options, keys pki, etcdURL string, port int) []string {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.Address,
		"--advertise-address=" + o.Address,
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(o.DataDir, "pki"),
		"--tls-cert-file=" + keys.servingCert,
		"--tls-private-key-file=" + keys.servingKey,
		"--client-ca-file=" + keys.caCert,
		"--token-auth-file=" + keys.tokenFile,
		"--authorization-mode=RBAC",
		"--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + keys.serviceAccountPub,
		"--service-account-signing-key-file=" + keys.serviceAccountKey,
		"--service-cluster-ip-range=" + o.ServiceCIDR.String(),
		// The advertise address is loopback, which the Endpoints API
		// rejects; nothing in the cluster dials the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
	}
	return append(args, o.APIServerArgs...)
}

func controllerManagerArgs(o Options, keys pki) []string {
	args := []string{
		"--kubeconfig=" + o.Kubeconfig,
		"--controllers=" + strings.Join(o.Controllers, ","),
		"--service-account-private-key-file=" + keys.serviceAccountKey,
		"--root-ca-file=" + keys.caCert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}
	return append(args, o.ControllerManagerArgs...)
}

func containsController(list []string, name string) bool {
	alias := strings.TrimSuffix(name, "-controller")
	for _, c := range list {
		if c == name || c == alias || c == "*" {
			return true
		}
	}
	return false
}

// freePort asks the kernel for a free TCP port on addr.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls check until it succeeds, the child exits or ctx ends.
func waitFor(ctx context.Context, c *child, what string, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-c.done:
			return c.exited()
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v; see %s)", what, ctx.Err(), last, c.logPath)
		case <-tick.C:
		}
	}
}

// prober checks the apiserver as the admin user.
type prober struct {
	server string
	token  string
	client *http.Client
}

func newProber(server, caFile, token string) (*prober, error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s: no certificates", caFile)
	}
	return &prober{
		server: server,
		token:  token,
		client: &http.Client{
			Timeout:   5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
	}, nil
}

func (p *prober) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.server+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), err
}

// readyz succeeds when every /readyz check of the apiserver passes.
func (p *prober) readyz(ctx context.Context) error {
	code, body, err := p.get(ctx, "/readyz")
	if err != nil {
		return err
	}
	if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		return fmt.Errorf("/readyz: %d %s", code, strings.TrimSpace(body))
	}
	return nil
}

// defaultServiceAccount succeeds once the serviceaccount controller has
// created default/default, which shows the controller manager is working.
func (p *prober) defaultServiceAccount(ctx context.Context) error {
	code, body, err := p.get(ctx, "/api/v1/namespaces/default/serviceaccounts/default")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("default ServiceAccount: %d %s", code, strings.TrimSpace(body))
	}
	return nil
}
