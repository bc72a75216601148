// Command osm-dev runs OSM's local dev stack on one machine: an embedded
// NATS server with JetStream and the mesh buckets, and a real Kubernetes
// control plane (kube-apiserver, etcd and the controllers that matter
// without a kubelet) with the SMI and OSM CRDs installed, and on them the
// mesh booted by tests/stack, the bookstore demo, simulated proxies and
// real proxyless gRPC traffic between the demo's pods (in a network
// namespace of its own; skipped, saying so, where it cannot make one). It
// prints what is running and checks that it works, then runs until Ctrl-C
// with a live table of the calls.
//
// State lives under --dir, so a restart finds its buckets, credentials and
// cluster objects again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/bus"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

const usage = `Usage: osm-dev [flags]

Runs OSM's local dev stack: an embedded NATS server with JetStream and the
mesh KV buckets with one user per role; a real kube-apiserver with etcd and
controllers, with the SMI and OSM CRDs and the bookstore demo namespaces;
the five mesh services built from services/ and run as processes (the
cert-authority, the injector-webhook, which injects the demo pods, the
smi-watcher, the policy-compiler and an xds-edge); simulated proxies
connected to the edge; and real proxyless gRPC traffic: bookstore v1 and
v2 servers behind the 75/25 TrafficSplit, a bookbuyer client calling them
without pause and a bookthief client that is always denied, each a
process of tests/cmd/bookstore-grpc configured only by the edge. It checks
that each part works, prints a summary, and runs until Ctrl-C with a live
table of the calls per backend version and result (or, with --once,
checks that the calls succeed and split as the TrafficSplit says and that
bookthief is denied, and exits; non-zero when a check fails).

The traffic runs in a network namespace the dev stack makes, with the pod
IPs on its loopback only; the host's interfaces are never touched. Making
it needs root (or CAP_SYS_ADMIN); without, the traffic is skipped with a
message and the rest runs.

The first start builds the kube-apiserver from source (8 to 15 minutes on
two cores); the binary is cached under $OSM_TESTBIN_DIR or
~/.cache/osm-testbin.

Flags:
`

type config struct {
	dir      string
	natsPort int
	noKube   bool
	once     bool
	mesh     string
	verbose  bool
	// noTraffic skips the proxyless gRPC pods' processes.
	noTraffic bool
	// rate is each proxyless client's calls per second; 0 without pause.
	rate float64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "osm-dev: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var c config
	fs := flag.NewFlagSet("osm-dev", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usage); fs.PrintDefaults() }
	fs.StringVar(&c.dir, "dir", ".osm-dev", "state directory: NATS store, role passwords, cluster data")
	fs.IntVar(&c.natsPort, "nats-port", 4222, "port of the embedded NATS server on 127.0.0.1")
	fs.BoolVar(&c.noKube, "no-kube", false, "do not start the Kubernetes control plane")
	fs.BoolVar(&c.once, "once", false, "start, check and print, then stop (a smoke test)")
	fs.StringVar(&c.mesh, "mesh-name", "osm", "mesh name for the openservicemesh.io/monitored-by namespace label")
	fs.BoolVar(&c.verbose, "v", false, "show the services' logs (and the proxyless pods' output)")
	fs.BoolVar(&c.noTraffic, "no-traffic", false, "do not run the proxyless gRPC pods (no network namespace, no calls)")
	fs.Float64Var(&c.rate, "call-rate", 200, "calls per second of each proxyless gRPC client; 0 calls without pause (about 3,000/s on two cores, and a core's worth of CPU)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if c.natsPort <= 0 || c.natsPort > 65535 {
		return fmt.Errorf("--nats-port %d: want 1..65535", c.natsPort)
	}
	if c.rate < 0 {
		return fmt.Errorf("--call-rate %g: want 0 (without pause) or more", c.rate)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	c.dir = dir
	say := func(format string, a ...any) { fmt.Fprintf(out, "osm-dev: "+format+"\n", a...) }

	// NATS.
	nats, err := stack.StartNATS(ctx, stack.NATSOptions{Port: c.natsPort, StoreDir: filepath.Join(dir, "nats"),
		PasswordFile: filepath.Join(dir, "nats-passwords.json")})
	if err != nil {
		return fmt.Errorf("start nats on port %d (--nats-port): %w", c.natsPort, err)
	}
	defer nats.Close()
	say("nats up at %s (JetStream store %s)", nats.URL(), filepath.Join(dir, "nats"))
	busReport, err := checkBus(ctx, nats)
	if err != nil {
		return err
	}

	// Kubernetes.
	var cluster *kube.Cluster
	var kubeReport, svcReport, trafficReport []row
	var live *traffic
	var checkErr error
	scr := &screen{out: out}
	if f, ok := out.(*os.File); ok {
		scr.tty = isTerminal(f)
		scr.width = func() int { return termWidth(f) }
	}
	if !c.noKube {
		say("starting the Kubernetes control plane (the first start builds it: 8 to 15 minutes)")
		cluster, err = kube.StartCluster(ctx, kube.Options{DataDir: filepath.Join(dir, "kube"), Logf: func(f string, a ...any) { say(f, a...) }})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				say("stop cluster: %v", err)
			}
		}()
		kubeReport, err = setupKube(ctx, cluster, c.mesh)
		if err != nil {
			return err
		}
		var changes io.Writer
		if !c.once {
			changes = scr
		}
		mesh, err := startMesh(ctx, c, nats, cluster, changes, say)
		if err != nil {
			return err
		}
		defer mesh.stop(say)
		svcReport = mesh.rows()
		trafficReport = mesh.trafficRows()
		if live = mesh.traffic; live != nil && c.once {
			say("checking the proxyless gRPC calls (%d of bookbuyer's)", checkCalls)
			var rows []row
			rows, checkErr = live.check(ctx)
			trafficReport = append(trafficReport, rows...)
		}
	}

	buckets, err := bucketRows(ctx, nats.Admin())
	if err != nil {
		return err
	}
	printReport(out, nats.URL(), dir, append(busReport, buckets...), kubeReport, svcReport, trafficReport, cluster)
	if checkErr != nil || c.once {
		return checkErr
	}
	if cluster != nil {
		if err := printTry(out, dir, cluster, live != nil); err != nil {
			return err
		}
	}
	say("running; press Ctrl-C to stop")
	if live != nil {
		// Twice a window: a change in the calls shows within half a
		// second, and fully within a window and a half.
		every := window / 2
		if !scr.tty {
			every = 10 * time.Second
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for ctx.Err() == nil {
			scr.show(live.table(time.Now()))
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}
	<-ctx.Done()
	say("stopping")
	return nil
}

type row struct{ what, status string }

// checkBus proves the contract works end to end: each writer role writes its
// own bucket and a watcher of another role sees it, and the edge role is
// refused when it tries to write compiled config.
func checkBus(ctx context.Context, n *stack.NATS) ([]row, error) {
	conn := func(r bus.Role) (*bus.Conn, error) { return n.Connect(ctx, r, "osm-dev-"+string(r)) }
	watcher, err := conn(bus.RoleWatcher)
	if err != nil {
		return nil, err
	}
	defer watcher.Close()
	compiler, err := conn(bus.RoleCompiler)
	if err != nil {
		return nil, err
	}
	defer compiler.Close()
	edge, err := conn(bus.RoleEdge)
	if err != nil {
		return nil, err
	}
	defer edge.Close()

	obs, err := watcher.Bucket(ctx, bus.BucketObserved)
	if err != nil {
		return nil, err
	}
	readObs, err := compiler.Bucket(ctx, bus.BucketObserved)
	if err != nil {
		return nil, err
	}
	w, err := readObs.Watch(ctx, "osm-dev.>")
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	key := bus.Key("osm-dev", "probe")
	start := time.Now()
	if _, err := obs.Put(ctx, key, timestamppb.Now()); err != nil {
		return nil, err
	}
	latency := time.Duration(0)
	for latency == 0 {
		select {
		case ev := <-w.Events():
			if ev.Kind == bus.EventPut && ev.Key == key {
				latency = time.Since(start)
			}
		case <-time.After(10 * time.Second):
			return nil, errors.New("bus check: the compiler role did not see the watcher's write")
		}
	}
	if err := obs.Delete(ctx, key); err != nil {
		return nil, err
	}
	rows := []row{{"watcher writes mesh-observed, compiler watches it", fmt.Sprintf("ok (%s)", latency.Round(10*time.Microsecond))}}

	compiled, err := edge.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := compiled.Put(pctx, "osm-dev", &meshv1.Generation{}); err == nil {
		return nil, errors.New("bus check: the edge role could write mesh-compiled")
	}
	rows = append(rows, row{"edge refused a write to mesh-compiled", "ok"})
	return rows, nil
}

// bucketRows counts the live keys of every mesh bucket.
func bucketRows(ctx context.Context, admin *bus.Conn) ([]row, error) {
	var rows []row
	for _, b := range bus.Buckets() {
		st, err := admin.Bucket(ctx, b)
		if err != nil {
			return nil, err
		}
		keys, err := st.Prime(ctx)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row{"bucket " + b, fmt.Sprintf("%d key(s)", len(keys))})
	}
	return rows, nil
}

// setupKube installs the CRDs and the bookstore namespaces, idempotently.
func setupKube(ctx context.Context, c *kube.Cluster, mesh string) ([]row, error) {
	dir, err := kube.CRDDir()
	if err != nil {
		return nil, err
	}
	if err := c.ApplyCRDs(ctx, dir); err != nil {
		return nil, err
	}
	rows := []row{{"CRDs from the chart", "established"}}
	cs := c.Clientset()
	for _, ns := range []string{"bookbuyer", "bookthief", "bookstore", "bookwarehouse"} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"openservicemesh.io/monitored-by": mesh}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "openservicemesh.io/monitored-by=" + mesh})
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{"meshed namespaces", fmt.Sprintf("%d", len(list.Items))})
	tt := schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	if _, err := c.Dynamic().Resource(tt).Namespace("bookstore").List(ctx, metav1.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list traffictargets: %w", err)
	}
	rows = append(rows, row{"SMI TrafficTarget API", "served"})
	sa, err := waitDefaultSA(ctx, c, "bookstore")
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{"serviceaccount controller", "default SA in bookstore: " + sa})
	return rows, nil
}

func waitDefaultSA(ctx context.Context, c *kube.Cluster, ns string) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		sa, err := c.Clientset().CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return sa.Name, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no default ServiceAccount in %s after 30s: %w", ns, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func printReport(out io.Writer, natsURL, dir string, busRows, kubeRows, svcRows, trafficRows []row, c *kube.Cluster) {
	tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCOMPONENT\tCHECK\tSTATUS")
	fmt.Fprintf(tw, "nats\t%s\trunning\n", natsURL)
	for _, r := range busRows {
		fmt.Fprintf(tw, "nats\t%s\t%s\n", r.what, r.status)
	}
	if c != nil {
		fmt.Fprintf(tw, "kubernetes\tapiserver %s\trunning\n", c.RESTConfig().Host)
		for _, r := range kubeRows {
			fmt.Fprintf(tw, "kubernetes\t%s\t%s\n", r.what, r.status)
		}
	} else {
		fmt.Fprintln(tw, "kubernetes\t(--no-kube)\tnot started")
	}
	for _, r := range svcRows {
		fmt.Fprintf(tw, "mesh\t%s\t%s\n", r.what, r.status)
	}
	for _, r := range trafficRows {
		fmt.Fprintf(tw, "traffic\t%s\t%s\n", r.what, r.status)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nRole credentials for NATS: %s (user = role name)\n", filepath.Join(dir, "nats-passwords.json"))
	if c != nil {
		fmt.Fprintf(out, "kubectl: export KUBECONFIG=%s\n", c.KubeconfigPath())
	}
}

// printTry prints the kubectl commands to try, and writes the gRPC
// TrafficTarget where the command that brings it back reads it.
func printTry(out io.Writer, dir string, c *kube.Cluster, traffic bool) error {
	tt := filepath.Join(dir, "demo", grpcTrafficTarget+"-traffictarget.json")
	b, err := json.MarshalIndent(grpcTrafficTargetObject(), "", "  ")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(tt), 0o700)
	}
	if err == nil {
		err = os.WriteFile(tt, append(b, '\n'), 0o600)
	}
	if err != nil {
		return fmt.Errorf("write the demo's TrafficTarget %s: %w", tt, err)
	}
	split := `'{"spec":{"backends":[{"service":"bookstore-v1","weight":10},{"service":"bookstore-v2","weight":90}]}}'`
	fmt.Fprintf(out, "\nTry, with KUBECONFIG exported:\n")
	fmt.Fprintf(out, "  kubectl patch trafficsplit -n bookstore bookstore-split --type merge -p %s\n", split)
	if traffic {
		fmt.Fprintln(out, "      bookbuyer's calls move to 10/90 within a second (and the bookbuyer proxy prints its new splits)")
		fmt.Fprintf(out, "  kubectl delete traffictarget -n bookstore %s\n", grpcTrafficTarget)
		fmt.Fprintln(out, "      bookbuyer's calls turn into PermissionDenied (the HTTP TrafficTarget bookstore still lets it reach bookstore)")
		fmt.Fprintf(out, "  kubectl apply -f %s\n", tt)
		fmt.Fprintln(out, "      brings it back; bookthief-grpc is denied throughout: no TrafficTarget names it")
	} else {
		fmt.Fprintln(out, "      each proxy's new splits are printed as they arrive")
	}
	fmt.Fprintln(out, "  kubectl edit trafficsplit -n bookstore bookstore-split")
	fmt.Fprintf(out, "\nAnd the osm CLI (make osm builds it into .bin/osm), which reads the components' addresses from %s:\n", filepath.Join(dir, osmContextFile))
	fmt.Fprintf(out, "  export OSM_CONTEXT=%s\n", filepath.Join(dir, osmContextFile))
	for _, c := range osmTry {
		fmt.Fprintf(out, "  .bin/osm %s\n      %s\n", c.args, c.what)
	}
	return nil
}

// osmTry are the osm commands printTry suggests against the dev stack.
var osmTry = []struct{ args, what string }{
	{"proxy list", "every connected proxy: its pod, identity, edge, ACKed generation and lag"},
	{"proxy get config bookbuyer/bookbuyer-0 --type cds -o json", "the clusters the edge serves bookbuyer-0's sidecar, as a config dump"},
	{"proxy get certs bookbuyer/bookbuyer-0", "the SANs, expiry and chain of its certificates (never the keys)"},
	{"policy check --from bookbuyer/bookbuyer --to bookstore/bookstore:14001 --path /books-bought --method GET", "allowed: names the TrafficTarget and the route that allow it"},
	{"policy check --from bookthief/bookthief --to bookstore/bookstore:14001", "denied, and why: no TrafficTarget lists bookthief (exit 1)"},
	{"convergence --watch", "then patch the TrafficSplit above: the generation it compiled to, the edge's commit, and each affected proxy's ACK with p50/p99"},
	{"convergence trafficsplit/bookstore/bookstore-split", "the TrafficSplit's last change: its Kubernetes write, the watcher's, the generation that includes it, each proxy's ACK"},
}
