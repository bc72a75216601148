// Package kube starts a real local Kubernetes control plane for OSM's
// integration tests and gives tests the pieces a cluster without nodes lacks:
// CRD installation, namespaces, and a kubelet stand-in that binds pods to a
// Node and reports them Running and Ready.
//
// The control plane is the kubebox binary (module tests/kubebox): an embedded
// etcd, kube-apiserver and kube-controller-manager built from
// k8s.io/kubernetes. Binary builds it once and caches it; StartCluster runs
// one per call, on loopback ports of its own, so test packages can each have
// a cluster and run in parallel. The harness needs Linux or another Unix.
package kube

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// EnvKeepData keeps a cluster's data dir (etcd data, PKI, component logs)
// after Stop when set to a non-empty value.
const EnvKeepData = "OSM_KUBE_KEEP_DATA"

// Options configures StartCluster. The zero value is ready to use.
type Options struct {
	// Binary is the kubebox binary. Default: the result of Binary.
	Binary string
	// Build configures the build when Binary is empty.
	Build BuildOptions
	// DataDir is kubebox's data directory. Default: a new temporary
	// directory, removed by Stop unless $OSM_KUBE_KEEP_DATA is set.
	DataDir string
	// ReadyTimeout bounds the wait for the control plane once kubebox runs.
	// Default: 3 minutes.
	ReadyTimeout time.Duration
	// Args are extra kubebox flags, e.g. "--apiserver-arg=--v=2".
	Args []string
	// AuditPolicy, when set, turns on the apiserver's audit log: it is an
	// audit.k8s.io/v1 Policy (YAML), e.g. AuditMetadata. The apiserver
	// writes one JSON event a line to AuditLogPath; AuditEvents reads
	// them. Empty (the default) leaves auditing off.
	AuditPolicy string
	// Logf receives progress messages. Nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a running kubebox control plane.
type Cluster struct {
	config     *rest.Config
	clientset  *kubernetes.Clientset
	dynamic    *dynamic.DynamicClient
	kubeconfig string
	dataDir    string
	auditLog   string
	removeData bool
	logf       func(string, ...any)

	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// Start starts a cluster for a test and stops it when the test ends. It
// fails the test if the cluster cannot start. For one cluster per package,
// use StartCluster from TestMain instead.
func Start(t testing.TB) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, err := StartCluster(ctx, Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("start kube cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop kube cluster: %v", err)
		}
	})
	return c
}

// StartCluster builds kubebox if needed, starts it and waits until it is
// ready. ctx bounds the build and the start only; the cluster runs until
// Stop. If the calling process dies, the kernel signals kubebox, which then
// stops its components.
func StartCluster(ctx context.Context, o Options) (_ *Cluster, err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = Binary(ctx, o.Build); err != nil {
			return nil, err
		}
	}
	c := &Cluster{dataDir: o.DataDir, logf: logf, exited: make(chan struct{})}
	if c.dataDir == "" {
		if c.dataDir, err = os.MkdirTemp("", "kubebox-"); err != nil {
			return nil, err
		}
		c.removeData = os.Getenv(EnvKeepData) == ""
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	if err := os.MkdirAll(filepath.Join(c.dataDir, "logs"), 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.dataDir, "logs", "kubebox.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	timeout := o.ReadyTimeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	args := append([]string{"--data-dir=" + c.dataDir, "--ready-timeout=" + timeout.String()}, o.Args...)
	if o.AuditPolicy != "" {
		auditArgs, err := c.auditArgs(o.AuditPolicy)
		if err != nil {
			logFile.Close()
			return nil, err
		}
		args = append(args, auditArgs...)
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stderr = logFile
	c.cmd.SysProcAttr = childSysProcAttr()
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start kubebox: %w", err)
	}
	readyLine := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "ready ") {
				readyLine <- line
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = c.cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()

	var line string
	select {
	case line = <-readyLine:
	case <-c.exited:
		return nil, fmt.Errorf("kubebox exited before it was ready (%v); its log %s ends with:\n%s",
			c.cmd.ProcessState, logPath, lastLines(logPath, 30))
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for kubebox: %w; its log %s ends with:\n%s", ctx.Err(), logPath, lastLines(logPath, 30))
	}
	c.kubeconfig = field(line, "kubeconfig")
	if c.config, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig); err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", c.kubeconfig, err)
	}
	// Tests create objects in bursts; the client-side default of 5 QPS
	// would make them slow for no benefit.
	c.config.QPS, c.config.Burst = 200, 400
	if c.clientset, err = kubernetes.NewForConfig(c.config); err != nil {
		return nil, err
	}
	if c.dynamic, err = dynamic.NewForConfig(c.config); err != nil {
		return nil, err
	}
	logf("kube cluster ready in %s: server=%s kubeconfig=%s", time.Since(start).Round(time.Millisecond), c.config.Host, c.kubeconfig)
	return c, nil
}

// Stop stops kubebox (SIGTERM, then SIGKILL after a minute) and removes a
// temporary data dir. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.cmd != nil && c.cmd.Process != nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.exited:
				if st := c.cmd.ProcessState; st != nil && !st.Success() {
					c.stopErr = fmt.Errorf("kubebox stopped with %v; see %s", st, filepath.Join(c.dataDir, "logs"))
				}
			case <-time.After(time.Minute):
				_ = c.cmd.Process.Kill()
				<-c.exited
				c.stopErr = errors.New("kubebox did not stop within 1m after SIGTERM and was killed")
			}
		}
		if c.removeData && c.stopErr == nil {
			if err := os.RemoveAll(c.dataDir); err != nil {
				c.stopErr = err
			}
		} else if c.dataDir != "" {
			c.logf("kube cluster data kept in %s", c.dataDir)
		}
	})
	return c.stopErr
}

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Clientset returns a typed admin client.
func (c *Cluster) Clientset() *kubernetes.Clientset { return c.clientset }

// Dynamic returns a dynamic admin client, for custom resources.
func (c *Cluster) Dynamic() *dynamic.DynamicClient { return c.dynamic }

// KubeconfigPath returns the path of the admin kubeconfig.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// DataDir returns kubebox's data directory; its logs/ holds the component
// logs.
func (c *Cluster) DataDir() string { return c.dataDir }

// field returns the value of key=value in a space-separated line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
