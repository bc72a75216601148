package stack

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Component is one of the mesh's services, named as its folder under
// services/.
type Component string

// The mesh's components.
const (
	CertAuthority Component = "cert-authority"
	Injector      Component = "injector-webhook"
	Watcher       Component = "smi-watcher"
	Compiler      Component = "policy-compiler"
	Edge          Component = "xds-edge"
)

// Components lists every component, in the order the dev stack starts them.
func Components() []Component {
	return []Component{CertAuthority, Injector, Watcher, Compiler, Edge}
}

// TrustDomain is the services' default SPIFFE trust domain, which the
// stack keeps.
const TrustDomain = "cluster.local"

// InjectorService is the injector's webhook Service in the control-plane
// namespace: an ExternalName for localhost, so that the apiserver reaches
// the injector process through the Service reference and verifies its
// certificate against <InjectorService>.<namespace>.svc, as in a cluster.
const InjectorService = "osm-injector"

// Cluster is the Kubernetes control plane the services run against; a
// *kube.Cluster is one.
type Cluster interface {
	KubeconfigPath() string
	Clientset() *kubernetes.Clientset
}

// Options configure a mesh. Cluster and Dir are required; the zero value
// of every other field is a working default.
type Options struct {
	// Cluster is the control plane the services run against.
	Cluster Cluster
	// Dir holds the files the services read (the bootstrap token, the
	// CA's roots) and, without a Builder, the binaries.
	Dir string
	// Builder builds the services; nil builds them into Dir/bin.
	Builder *Builder
	// NATS is the server the services use; nil starts one, with random
	// passwords, that Close stops.
	NATS *NATS
	// Name names the stack's instances: the watcher's and the compiler's
	// holder identity, the edge's id (Name-edge-0) and the injector's
	// webhook configuration (Name-sidecar-injector); default "osm".
	Name string
	// MeshName is the value of the namespaces' monitored-by label;
	// default "osm".
	MeshName string
	// Namespace is the control-plane namespace, created when missing;
	// default "osm-system".
	Namespace string
	// MeshConfig is the name of the MeshConfig in Namespace; default
	// "osm-mesh-config".
	MeshConfig string
	// BootstrapToken is the CA's pre-shared dev bootstrap token, with which
	// the injector and the edge obtain their certificates; empty reuses the
	// one an earlier start left in Dir, else generates one.
	BootstrapToken string
	// AckStatusInterval paces the edge's ACK status reports; zero keeps
	// the edge's default.
	AckStatusInterval time.Duration
	// Flags are more flags per component, after the stack's own.
	Flags map[Component][]string
	// ReadyTimeout bounds each component's way to ready; default 2 minutes.
	ReadyTimeout time.Duration
	// Log, when set, receives the services' output as they print it; each
	// process keeps its own copy either way (Proc.Output, Mesh.Logs).
	Log io.Writer
}

// Mesh is the mesh's services running as processes against a cluster and
// an embedded NATS server.
type Mesh struct {
	o       Options
	nats    *NATS
	ownNATS bool
	running map[Component]*instance
	order   []Component // first starts, in order
	procs   []*Proc     // every process started, in order
	bundle  *meshv1.TrustBundle
	// injectorCert authenticates WorkloadCert's calls to the CA.
	injectorCert *tls.Certificate
}

// instance is a component's current process and its listeners.
type instance struct {
	proc  *Proc
	admin string
	addr  string // the serving listener of the CA, the injector and the edge
}

// stopTimeout bounds a service's graceful stop.
const stopTimeout = 30 * time.Second

// New prepares a mesh: it starts NATS unless Options.NATS is set and
// creates the control-plane namespace. Start starts the services.
func New(ctx context.Context, o Options) (*Mesh, error) {
	if o.Cluster == nil || o.Dir == "" {
		return nil, errors.New("stack: Options.Cluster and Options.Dir are required")
	}
	o.Name = cmp.Or(o.Name, "osm")
	o.MeshName = cmp.Or(o.MeshName, "osm")
	o.Namespace = cmp.Or(o.Namespace, "osm-system")
	o.MeshConfig = cmp.Or(o.MeshConfig, "osm-mesh-config")
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("stack dir: %w", err)
	}
	if o.Builder == nil {
		o.Builder = NewBuilder(filepath.Join(o.Dir, "bin"))
	}
	if o.BootstrapToken == "" {
		b, err := os.ReadFile(filepath.Join(o.Dir, tokenFile))
		o.BootstrapToken = strings.TrimSpace(string(b))
		if err != nil || o.BootstrapToken == "" {
			if o.BootstrapToken, err = randomHex(24); err != nil {
				return nil, err
			}
		}
	}
	_, err := o.Cluster.Clientset().CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("control-plane namespace: %w", err)
	}
	m := &Mesh{o: o, nats: o.NATS, running: map[Component]*instance{}}
	if m.nats == nil {
		if m.nats, err = StartNATS(ctx, NATSOptions{}); err != nil {
			return nil, err
		}
		m.ownNATS = true
	}
	return m, nil
}

// Start builds and starts the components in the order given and waits
// until each is ready. The cert-authority, whose certificates the others
// need, is waited for before the components after it start. A component
// starts once; Restart starts it again.
func (m *Mesh) Start(ctx context.Context, cs ...Component) error {
	var started []Component
	for _, c := range cs {
		if m.running[c] != nil {
			return fmt.Errorf("stack: %s was started already (Restart starts it again)", c)
		}
		if err := m.launch(ctx, c, &instance{}); err != nil {
			return err
		}
		if c == CertAuthority {
			if err := m.waitReady(ctx, c); err != nil {
				return err
			}
			continue
		}
		started = append(started, c)
	}
	for _, c := range started {
		if err := m.waitReady(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// launch starts c's process with the listeners of inst (allocated when
// empty) and makes it c's current instance.
func (m *Mesh) launch(ctx context.Context, c Component, inst *instance, extra ...string) error {
	if c.caClient() && m.bundle == nil {
		return fmt.Errorf("stack: %s needs the cert-authority: start it first", c)
	}
	bin, err := m.o.Builder.Build(ctx, string(c))
	if err != nil {
		return err
	}
	if inst.admin == "" {
		if inst.admin, err = FreeAddr(); err != nil {
			return err
		}
		if c.serves() {
			if inst.addr, err = FreeAddr(); err != nil {
				return err
			}
		}
	}
	if c.caClient() {
		if err := m.writeCAFiles(); err != nil {
			return err
		}
	}
	if c == Injector {
		if err := m.injectorService(ctx); err != nil {
			return err
		}
	}
	p, err := Start(string(c), bin, append(m.args(c, inst.admin, inst.addr), extra...), m.env(c), m.o.Log)
	if err != nil {
		return err
	}
	if m.running[c] == nil {
		m.order = append(m.order, c)
	}
	inst.proc = p
	m.running[c] = inst
	m.procs = append(m.procs, p)
	return nil
}

// serves reports whether c has a serving listener besides its admin one.
func (c Component) serves() bool { return c == CertAuthority || c.caClient() }

// caClient reports whether c obtains its certificate from the CA.
func (c Component) caClient() bool { return c == Injector || c == Edge }

// waitReady waits until c is ready; then, for the CA, reads the trust
// bundle, and for the injector, waits for its webhook configuration.
func (m *Mesh) waitReady(ctx context.Context, c Component) error {
	inst := m.running[c]
	if err := inst.proc.WaitReady(ctx, inst.admin, m.o.ReadyTimeout); err != nil {
		return fmt.Errorf("%s: %w\n%s", c, err, inst.proc.Output())
	}
	switch c {
	case CertAuthority:
		return m.readBundle(ctx)
	case Injector:
		return m.waitWebhookConfig(ctx)
	}
	return nil
}

// readBundle reads the trust bundle the CA publishes in KV mesh-trust.
func (m *Mesh) readBundle(ctx context.Context) error {
	trust, err := m.nats.Admin().Bucket(ctx, bus.BucketTrust)
	if err != nil {
		return fmt.Errorf("trust bundle: %w", err)
	}
	b := &meshv1.TrustBundle{}
	if _, err := trust.Get(ctx, layout.BundleKey, b); err != nil {
		return fmt.Errorf("trust bundle: %w", err)
	}
	m.bundle = b
	return nil
}

// writeCAFiles writes the files a CA client reads: the bootstrap token and
// the trust bundle's roots.
func (m *Mesh) writeCAFiles() error {
	for name, data := range map[string][]byte{tokenFile: []byte(m.o.BootstrapToken), rootsFile: caclient.RootsPEM(m.bundle)} {
		if err := os.WriteFile(filepath.Join(m.o.Dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// Stop stops c's process (SIGTERM, then a kill after 30 s) and reports an
// unclean exit; c keeps its addresses for Restart.
func (m *Mesh) Stop(c Component) error {
	inst := m.running[c]
	if inst == nil {
		return fmt.Errorf("stack: %s is not running", c)
	}
	return inst.proc.Stop(stopTimeout)
}

// Restart stops c when it runs and starts it again on the same addresses,
// with extra flags for this process only, and waits until it is ready.
func (m *Mesh) Restart(ctx context.Context, c Component, extra ...string) error {
	inst := &instance{}
	var stopErr error
	if cur := m.running[c]; cur != nil {
		stopErr = cur.proc.Stop(stopTimeout)
		inst.admin, inst.addr = cur.admin, cur.addr
	}
	err := m.launch(ctx, c, inst, extra...)
	if err == nil {
		err = m.waitReady(ctx, c)
	}
	return errors.Join(stopErr, err)
}

// StartReplica starts another process of the running component c with
// the same flags but its own admin listener, for a test of what a second
// replica does; it does not wait for it. Close stops it, as does the
// caller when it wants.
func (m *Mesh) StartReplica(ctx context.Context, c Component) (*Proc, error) {
	inst := m.running[c]
	if inst == nil {
		return nil, fmt.Errorf("stack: %s is not running", c)
	}
	bin, err := m.o.Builder.Build(ctx, string(c))
	if err != nil {
		return nil, err
	}
	admin, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	p, err := Start(string(c), bin, m.args(c, admin, inst.addr), m.env(c), m.o.Log)
	if err != nil {
		return nil, err
	}
	m.procs = append(m.procs, p)
	return p, nil
}

// Close stops every process the mesh started, the last started first, and
// the NATS server when the mesh started it. It reports unclean exits.
func (m *Mesh) Close() error {
	var errs []error
	for i := len(m.procs) - 1; i >= 0; i-- {
		errs = append(errs, m.procs[i].Stop(stopTimeout))
	}
	if m.ownNATS {
		m.nats.Close()
	}
	return errors.Join(errs...)
}

// Started lists the components started so far, in the order they first
// started.
func (m *Mesh) Started() []Component { return append([]Component(nil), m.order...) }

// Proc is c's current process; nil before c starts.
func (m *Mesh) Proc(c Component) *Proc {
	if inst := m.running[c]; inst != nil {
		return inst.proc
	}
	return nil
}

// AdminAddr is the address of c's admin listener (/healthz, /readyz,
// /metrics).
func (m *Mesh) AdminAddr(c Component) string {
	if inst := m.running[c]; inst != nil {
		return inst.admin
	}
	return ""
}

// Addr is the address c serves at: the CA's gRPC, the injector's webhook,
// the edge's ADS; empty for the others.
func (m *Mesh) Addr(c Component) string {
	if inst := m.running[c]; inst != nil {
		return inst.addr
	}
	return ""
}

// NATS is the server the services use.
func (m *Mesh) NATS() *NATS { return m.nats }

// Bundle is the trust bundle as the cert-authority published it when it
// last became ready.
func (m *Mesh) Bundle() *meshv1.TrustBundle { return m.bundle }

// CAServerName is the name in the CA's serving certificate that its
// clients verify.
func (m *Mesh) CAServerName() string { return "osm-cert-authority." + m.o.Namespace + ".svc" }

// WebhookConfigName is the name of the injector's
// MutatingWebhookConfiguration.
func (m *Mesh) WebhookConfigName() string { return m.o.Name + "-sidecar-injector" }

// ValidatingWebhookConfigName is the name of the injector's
// ValidatingWebhookConfiguration of the policy kinds, one per mesh.
func (m *Mesh) ValidatingWebhookConfigName() string { return m.o.Name + "-policy-validator" }

// DialCA connects to the cert-authority, verifying it against the trust
// bundle and presenting cert when it is not nil.
func (m *Mesh) DialCA(cert *tls.Certificate) (*grpc.ClientConn, error) {
	if m.bundle == nil {
		return nil, errors.New("stack: the cert-authority is not started")
	}
	return caclient.Dial(m.Addr(CertAuthority), m.bundle, m.CAServerName(), cert)
}

// Bootstrap obtains a control-plane certificate for role with the dev
// bootstrap token, as a component's deployment would.
func (m *Mesh) Bootstrap(ctx context.Context, role cav1.ComponentRole) (*caclient.Issued, error) {
	conn, err := m.DialCA(nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	issued, err := caclient.Bootstrap(ctx, cav1.NewCertificateAuthorityServiceClient(conn), caclient.BootstrapRequest{
		Token: m.o.BootstrapToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED, Role: role})
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", role, err)
	}
	return issued, nil
}

// WorkloadCert signs an xDS client certificate of ttl for the workload id
// as the injector does for a pod's bootstrap: over a connection authenticated
// with an injector control-plane certificate (obtained once).
func (m *Mesh) WorkloadCert(ctx context.Context, id identity.ID, ttl time.Duration) (*caclient.Issued, error) {
	if m.injectorCert == nil {
		boot, err := m.Bootstrap(ctx, cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK)
		if err != nil {
			return nil, err
		}
		m.injectorCert = &boot.Pair
	}
	conn, err := m.DialCA(m.injectorCert)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	issued, err := caclient.Sign(ctx, cav1.NewCertificateAuthorityServiceClient(conn), id, identity.UsageXDSClient, ttl)
	if err != nil {
		return nil, fmt.Errorf("sign for %s: %w", id, err)
	}
	return issued, nil
}

// DialEdge connects to the edge as a proxy holding cert, verifying the
// edge as Envoy does (see DialEdge).
func (m *Mesh) DialEdge(cert tls.Certificate) (*grpc.ClientConn, error) {
	roots, err := caclient.RootPool(m.bundle)
	if err != nil {
		return nil, err
	}
	return DialEdge(m.Addr(Edge), cert, roots, identity.ControlPlaneURI(TrustDomain, identity.RoleXDSEdge).String())
}

// Secrets are the values that must never reach a service's log: the
// bootstrap token and the NATS passwords.
func (m *Mesh) Secrets() []string {
	out := []string{m.o.BootstrapToken}
	for _, pw := range m.nats.Passwords() {
		out = append(out, pw)
	}
	return out
}

// Logs is the output of every process the mesh started, in start order.
func (m *Mesh) Logs() string {
	var b strings.Builder
	for _, p := range m.procs {
		fmt.Fprintf(&b, "--- %s output ---\n%s\n", p.Name, p.Output())
	}
	return b.String()
}
