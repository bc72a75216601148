package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// The proxyless part of the demo, in the pods' network namespace.
const (
	// edgePodIP is where the pods reach the edge (the injector's
	// --xds-addr, so every bootstrap names it): a forwarder on the
	// namespace's loopback, standing in for the edge's Service and
	// kube-proxy, connects to the edge on the host's loopback.
	edgePodIP   = "10.244.0.1"
	edgePodPort = "15128"
	grpcTarget  = "xds:///bookstore.bookstore:14001"
	grpcPort    = "14001"
	grpcApp     = "bookstore-grpc"
)

// errNoNamespace marks a dev stack that cannot make the pods' network
// namespace; the rest runs without the traffic.
var errNoNamespace = errors.New("no network namespace")

// newNS makes the pods' network namespace; a variable so that the tests
// can play a host without the privilege.
var newNS = newPodNS

// trafficOptions configure startTraffic.
type trafficOptions struct {
	dir     string
	cluster *kube.Cluster
	// edgeAddr is the edge's ADS address on the host's loopback.
	edgeAddr string
	// rate is each client's calls per second; 0 calls without pause.
	rate float64
	// log receives the apps' output when not nil (-v).
	log io.Writer
}

// traffic runs the proxyless pods of the demo as processes of
// tests/cmd/bookstore-grpc in the pods' network namespace: the bookstore
// v1 and v2 servers and the bookbuyer and bookthief clients, each with the
// files of its bootstrap Secret (stack.MountProxyless plays the kubelet).
type traffic struct {
	o       trafficOptions
	ns      *podNS
	fwd     *forwarder
	mounts  []*stack.ProxylessPod
	cancels []func()
	servers []*app
	clients []*client
	started time.Time
}

// client is a calling pod and its calls.
type client struct {
	name  string
	app   *app
	stats *callStats
}

// startTraffic builds bookstore-grpc, makes the namespace and starts the
// pods' processes: the servers first, each waited for until it serves (it
// has its listener from the edge), then the clients. An error wrapping
// errNoNamespace means the namespace could not be made (not root); the
// caller goes on without traffic.
func startTraffic(ctx context.Context, o trafficOptions) (_ *traffic, err error) {
	bin := filepath.Join(o.dir, "bin", grpcApp)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+grpcApp)
	build.Dir = filepath.Join(stack.RepoRoot(), "tests")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w\n%s", grpcApp, err, out)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix(edgePodIP + "/32")}
	for _, p := range demoPods {
		if p.proxyless {
			addrs = append(addrs, netip.PrefixFrom(netip.MustParseAddr(p.ip), 32))
		}
	}
	ns, err := newNS(addrs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoNamespace, err)
	}
	t := &traffic{o: o, ns: ns}
	defer func() {
		if err != nil {
			t.stop()
		}
	}()
	var ln net.Listener
	ns.do(func() { ln, err = net.Listen("tcp", net.JoinHostPort(edgePodIP, edgePodPort)) })
	if err != nil {
		return t, fmt.Errorf("the edge's address in the pods' namespace: %w", err)
	}
	t.fwd = forward(ln, o.edgeAddr)

	env := map[string]map[string]string{}
	for _, p := range demoPods {
		if !p.proxyless {
			continue
		}
		m, err := t.mount(ctx, p)
		if err != nil {
			return t, err
		}
		env[p.name] = m.Env
	}
	for _, p := range demoPods {
		if v := p.labels["version"]; p.proxyless && v != "" {
			addr := net.JoinHostPort(p.ip, grpcPort)
			a, err := t.start(p.name, bin, env[p.name], nil, "serve", "--addr", addr, "--version", v)
			if err != nil {
				return t, err
			}
			t.servers = append(t.servers, a)
			if err := a.waitServing(ctx, addr, 60*time.Second); err != nil {
				return t, err
			}
		}
	}
	rate := strconv.FormatFloat(o.rate, 'f', -1, 64)
	for _, p := range demoPods {
		if p.proxyless && p.labels["version"] == "" {
			c := &client{name: p.ns, stats: newCallStats()}
			c.app, err = t.start(p.name, bin, env[p.name], c.stats,
				"call", "--target", grpcTarget, "--methods", "Buy", "--rate", rate, "--json", "--report", "0")
			if err != nil {
				return t, err
			}
			t.clients = append(t.clients, c)
		}
	}
	t.started = time.Now()
	return t, nil
}

// mount plays the kubelet for p: its bootstrap Secret's files under
// --dir, waited for up to a minute.
func (t *traffic) mount(ctx context.Context, p demoPodSpec) (*stack.ProxylessPod, error) {
	pod, err := t.o.cluster.Clientset().CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("proxyless pod %s/%s: %w", p.ns, p.name, err)
	}
	// The volume follows the Secret until mctx ends: at stop, or when no
	// Secret came within a minute.
	mctx, cancel := context.WithCancelCause(ctx)
	t.cancels = append(t.cancels, func() { cancel(nil) })
	timer := time.AfterFunc(time.Minute, func() { cancel(errors.New("the injector wrote no bootstrap Secret within 1m")) })
	m, err := stack.MountProxyless(mctx, t.o.cluster.Clientset(), pod, filepath.Join(t.o.dir, "pods", p.ns, p.name))
	timer.Stop()
	if err == nil && mctx.Err() != nil {
		err = errors.Join(context.Cause(mctx), m.Stop())
	}
	if err != nil {
		return nil, err
	}
	t.mounts = append(t.mounts, m)
	return m, nil
}

// start starts pod's process of bin in the namespace with env on top of
// this process's; stdout, when set, gets its standard output.
func (t *traffic) start(pod, bin string, env map[string]string, stdout io.Writer, args ...string) (*app, error) {
	a := &app{name: pod, done: make(chan struct{}), tail: &lineTail{}}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Env = os.Environ()
	for k, v := range env {
		a.cmd.Env = append(a.cmd.Env, k+"="+v)
	}
	var out io.Writer = a.tail
	if t.o.log != nil {
		out = io.MultiWriter(a.tail, prefixed(t.o.log, pod+": "))
	}
	a.cmd.Stdout, a.cmd.Stderr = out, out
	if stdout != nil {
		a.cmd.Stdout = stdout
	}
	// The parent-death signal follows the thread that forks, the
	// namespace's, which lives as long as the namespace.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	t.ns.do(func() { err = a.cmd.Start() })
	if err != nil {
		return nil, fmt.Errorf("start %s of pod %s: %w", filepath.Base(bin), pod, err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	return a, nil
}

// stop stops the clients, then the servers, the volumes and the
// namespace.
func (t *traffic) stop() {
	for _, c := range t.clients {
		c.app.stop()
	}
	for _, s := range t.servers {
		s.stop()
	}
	for _, m := range t.mounts {
		_ = m.Stop()
	}
	for _, cancel := range t.cancels {
		cancel()
	}
	if t.fwd != nil {
		t.fwd.close()
	}
	t.ns.close()
}

// rows describe the namespace and the pods for the report.
func (t *traffic) rows() []row {
	var ips []string
	for _, p := range demoPods {
		if p.proxyless {
			ips = append(ips, p.ip)
		}
	}
	rows := []row{{"pods' network namespace", fmt.Sprintf("lo has the pod IPs %s and the edge's %s",
		strings.Join(ips, " "), net.JoinHostPort(edgePodIP, edgePodPort))}}
	for _, s := range t.servers {
		rows = append(rows, row{"pod bookstore/" + s.name + " (bookstore-grpc serve)", "serving " + s.serving()})
	}
	for _, c := range t.clients {
		rate := "without pause"
		if t.o.rate > 0 {
			rate = fmt.Sprintf("%g calls/s", t.o.rate)
		}
		rows = append(rows, row{"pod " + c.name + "/" + c.app.name + " (bookstore-grpc call)", "calling " + grpcTarget + " " + rate})
	}
	return rows
}

// backends are the versions of the bookstore servers.
func backends() []string {
	var vs []string
	for _, p := range demoPods {
		if v := p.labels["version"]; v != "" && p.proxyless {
			vs = append(vs, v)
		}
	}
	sort.Strings(vs)
	return vs
}

// table is the live table: each client's calls of the last window per
// answering version and result, and its totals.
func (t *traffic) table(now time.Time) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "gRPC calls to %s in the last %s (since start)\n", grpcTarget, window)
	tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tBACKEND\tOK\tSHARE\tPERMISSION-DENIED\tOTHER\t")
	for _, c := range t.clients {
		rec, tot := c.stats.recent(now), c.stats.totals()
		ok := sum(rec, "", resultOK)
		for _, v := range append(backends(), "-") {
			cell := func(r string) string { return fmt.Sprintf("%d (%d)", sum(rec, v, r), sum(tot, v, r)) }
			share := ""
			if v != "-" {
				share = pct(sum(rec, v, resultOK), ok)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, v, cell(resultOK), share, cell(resultDenied), cell(resultOther))
		}
	}
	_ = tw.Flush()
	for _, c := range t.clients {
		if o := c.stats.other(now.Add(-window)); o != "" {
			fmt.Fprintf(&b, "%s's last other: %s\n", c.name, truncate(o, 120))
		}
		select {
		case <-c.app.done:
			fmt.Fprintf(&b, "%s's client exited: %v %s\n", c.name, c.app.err, truncate(c.app.tail.last(), 100))
		default:
		}
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

// clientNamed is the client of namespace ns.
func (t *traffic) clientNamed(ns string) *client {
	for _, c := range t.clients {
		if c.name == ns {
			return c
		}
	}
	return nil
}

// app is a pod's process.
type app struct {
	name string
	cmd  *exec.Cmd
	tail *lineTail
	done chan struct{}
	err  error
}

// stop sends SIGTERM and kills the process after 5 s.
func (a *app) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// waitServing waits until the server serves on addr.
func (a *app) waitServing(ctx context.Context, addr string, timeout time.Duration) error {
	err := stack.Eventually(ctx, timeout, func() error {
		select {
		case <-a.done:
			return fmt.Errorf("exited: %v", a.err)
		default:
		}
		if a.serving() != addr {
			return errors.New("no listener from the edge yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pod %s: bookstore-grpc serve on %s: %w\n%s", a.name, addr, err, a.tail.String())
	}
	return nil
}

// serving is the address the server last said it serves on; empty while
// it does not.
func (a *app) serving() string {
	for _, l := range slices.Backward(a.tail.lines()) {
		if addr, ok := strings.CutPrefix(l, "serving "); ok {
			return addr
		}
		if strings.HasPrefix(l, "not-serving ") {
			return ""
		}
	}
	return ""
}

// lineTail keeps the last lines written to it.
type lineTail struct {
	mu      sync.Mutex
	partial []byte
	tail    []string
}

func (l *lineTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.tail = append(l.tail, string(l.partial[:i]))
		if len(l.tail) > 50 {
			l.tail = l.tail[1:]
		}
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lineTail) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.tail...)
}

func (l *lineTail) last() string {
	ls := l.lines()
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}

func (l *lineTail) String() string { return strings.Join(l.lines(), "\n") }

// prefixed writes each line to w with prefix.
func prefixed(w io.Writer, prefix string) io.Writer {
	return &prefixWriter{w: w, prefix: prefix}
}

type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.partial[:i])
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}
