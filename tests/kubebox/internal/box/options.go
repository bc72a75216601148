// Package box runs a local Kubernetes control plane: an embedded etcd, a
// kube-apiserver and a kube-controller-manager with the controllers that work
// without a kubelet. It is the supervisor behind the kubebox command; the two
// Kubernetes components run as child processes of the same binary so that their
// process-global flags, metrics and signal handlers never meet.
package box

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// DefaultControllers are the kube-controller-manager controllers that do
// useful work in a cluster without kubelets or a scheduler.
var DefaultControllers = []string{
	"endpointslice-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"root-ca-certificate-publisher-controller",
}

// Options configures a control plane. The zero value is not usable: build
// it with ParseFlags or fill in at least DataDir and Executable.
type Options struct {
	// DataDir holds etcd's data, the PKI, the token file, the kubeconfig,
	// the ready file and the component logs. Reusing it keeps the cluster's
	// state and credentials across restarts.
	DataDir string
	// Executable is the binary re-executed for the apiserver and
	// controller-manager subcommands (normally os.Executable()).
	Executable string
	// Address is the loopback address every listener binds to.
	Address string
	// SecurePort is the kube-apiserver's HTTPS port; 0 picks a free one.
	SecurePort int
	// EtcdPort is etcd's client port; 0 picks a free one.
	EtcdPort int
	// Kubeconfig is where the admin kubeconfig is written.
	Kubeconfig string
	// ReadyFile is written (as JSON) once the control plane is ready and
	// removed at shutdown.
	ReadyFile string
	// LogDir receives etcd.log, kube-apiserver.log and
	// kube-controller-manager.log.
	LogDir string
	// ServiceCIDR is the kube-apiserver's --service-cluster-ip-range.
	ServiceCIDR netip.Prefix
	// AdminToken is the static bearer token of the admin user (group
	// system:masters). Empty means: reuse the one in the data dir, or
	// generate one.
	AdminToken string
	// Controllers are passed to kube-controller-manager --controllers.
	Controllers []string
	// EtcdFsync turns etcd's fsync on. Off by default: the cluster is
	// throw-away and fsync dominates write latency on slow disks.
	EtcdFsync bool
	// ReadyTimeout bounds the wait for the control plane to become ready.
	ReadyTimeout time.Duration
	// ShutdownTimeout bounds each component's graceful stop before it is
	// killed.
	ShutdownTimeout time.Duration
	// APIServerArgs are extra flags appended to kube-apiserver's.
	APIServerArgs []string
	// ControllerManagerArgs are extra flags appended to
	// kube-controller-manager's.
	ControllerManagerArgs []string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// ParseFlags parses the kubebox command line into Options. Usage text goes
// to out. It returns flag.ErrHelp when -help was asked for.
func ParseFlags(args []string, out io.Writer) (Options, error) {
	var (
		o           Options
		serviceCIDR string
		controllers string
		apiArgs     stringList
		kcmArgs     stringList
	)
	fs := flag.NewFlagSet("kubebox", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHeader)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.DataDir, "data-dir", "", "directory for etcd data, PKI, tokens, kubeconfig, ready file and logs (required; created if missing, reused if present)")
	fs.StringVar(&o.Address, "address", "127.0.0.1", "loopback IP address that etcd and kube-apiserver listen on")
	fs.IntVar(&o.SecurePort, "secure-port", 0, "kube-apiserver HTTPS port; 0 picks a free port")
	fs.IntVar(&o.EtcdPort, "etcd-port", 0, "embedded etcd client port; 0 picks a free port")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (default <data-dir>/kubeconfig)")
	fs.StringVar(&o.ReadyFile, "ready-file", "", "JSON file written once /readyz is ok and the controllers run, removed at shutdown (default <data-dir>/ready.json)")
	fs.StringVar(&o.LogDir, "log-dir", "", "directory for etcd.log, kube-apiserver.log and kube-controller-manager.log (default <data-dir>/logs)")
	fs.StringVar(&serviceCIDR, "service-cluster-ip-range", "10.96.0.0/16", "CIDR that Service cluster IPs are allocated from")
	fs.StringVar(&o.AdminToken, "admin-token", "", "static bearer token of user admin in group system:masters (default: reuse <data-dir>/tokens.csv or generate a random one)")
	fs.StringVar(&controllers, "controllers", strings.Join(DefaultControllers, ","), "comma-separated kube-controller-manager controllers to run")
	fs.BoolVar(&o.EtcdFsync, "etcd-fsync", false, "make etcd fsync its WAL and database; off by default because the cluster is disposable and fsync makes writes slow")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long to wait for the control plane to become ready before giving up")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long each component may take to stop after SIGTERM before it is killed")
	fs.Var(&apiArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--v=4 (repeatable)")
	fs.Var(&kcmArgs, "controller-manager-arg", "extra kube-controller-manager flag, e.g. --controller-manager-arg=--v=4 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("unexpected argument %q (subcommands: apiserver, controller-manager)", fs.Arg(0))
	}
	prefix, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return Options{}, fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	o.ServiceCIDR = prefix
	for _, c := range strings.Split(controllers, ",") {
		if c = strings.TrimSpace(c); c != "" {
			o.Controllers = append(o.Controllers, c)
		}
	}
	o.APIServerArgs = apiArgs
	o.ControllerManagerArgs = kcmArgs
	return o, nil
}

const usageHeader = `kubebox runs a local Kubernetes control plane for tests and the dev stack.

It starts an embedded etcd, kube-apiserver (RBAC, webhook admission, a static
admin token) and kube-controller-manager (endpointslice, serviceaccount,
serviceaccount-token, namespace, garbage-collector and root-ca publisher
controllers) on loopback. There is no kubelet or scheduler: tests create Nodes
and bind pods themselves.

When the apiserver's /readyz is ok and the controllers have created the
default ServiceAccount, kubebox prints one line to stdout,
  ready kubeconfig=<path> server=<url>
and writes the ready file. SIGTERM or SIGINT stops everything.

Usage:
  kubebox --data-dir DIR [flags]
  kubebox apiserver [kube-apiserver flags]           (used internally)
  kubebox controller-manager [kcm flags]             (used internally)

Flags:
`

// complete fills in defaults derived from DataDir and checks the options.
func (o *Options) complete() error {
	if o.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	o.DataDir = abs
	if o.Executable == "" {
		return errors.New("executable path is empty")
	}
	addr, err := netip.ParseAddr(o.Address)
	if err != nil {
		return fmt.Errorf("--address: %w", err)
	}
	if !addr.IsLoopback() {
		return fmt.Errorf("--address %s: must be a loopback address", o.Address)
	}
	if o.Kubeconfig == "" {
		o.Kubeconfig = filepath.Join(o.DataDir, "kubeconfig")
	}
	if o.ReadyFile == "" {
		o.ReadyFile = filepath.Join(o.DataDir, "ready.json")
	}
	if o.LogDir == "" {
		o.LogDir = filepath.Join(o.DataDir, "logs")
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--secure-port", o.SecurePort}, {"--etcd-port", o.EtcdPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("%s %d: out of range", p.name, p.v)
		}
	}
	if !o.ServiceCIDR.IsValid() {
		return errors.New("--service-cluster-ip-range is empty")
	}
	if len(o.Controllers) == 0 {
		return errors.New("--controllers is empty")
	}
	if o.ReadyTimeout <= 0 {
		return errors.New("--ready-timeout must be positive")
	}
	if o.ShutdownTimeout <= 0 {
		return errors.New("--shutdown-timeout must be positive")
	}
	return nil
}
