package access

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/osmctx"
)

// Chart names of the plain-HTTP listeners osm verify reads.
const (
	// CompilerName is the app.kubernetes.io/name of the policy-compiler's
	// pods, whose container port AdminPort serves /metrics.
	CompilerName = "osm-policy-compiler"
	AdminPort    = "admin"
	// NATSName is the app.kubernetes.io/name of the NATS pods, whose
	// container port MonitorPort is NATS's monitoring endpoint.
	NATSName    = "osm-nats"
	MonitorPort = "monitor"
	// PartOfLabel is osm on every pod of the mesh's chart.
	PartOfLabel = "app.kubernetes.io/part-of"
)

// Monitors finds the listeners osm verify reads without credentials: the
// policy-compilers' admin listeners (/metrics: the generation committed,
// the policies rejected) and NATS's monitoring (/jsz: the buckets' streams
// and their replicas). Neither serves a secret, so verify needs no NATS
// user: the least privilege is the port-forward the proxy commands need
// anyway.
type Monitors interface {
	// Compilers are the admin listeners of every ready policy-compiler.
	Compilers(ctx context.Context) ([]Endpoint, error)
	// NATSMonitors are the monitoring listeners of every ready NATS server.
	NATSMonitors(ctx context.Context) ([]Endpoint, error)
	// Admins are the admin listeners (/metrics) of every ready component,
	// which osm bug-report snapshots.
	Admins(ctx context.Context) ([]Endpoint, error)
}

var (
	_ Monitors = (*PortForward)(nil)
	_ Monitors = (*ContextFile)(nil)
)

// Monitors is the client's dialer's Monitors, when it has them.
func (c *Client) Monitors() (Monitors, bool) {
	m, ok := c.dialer.(Monitors)
	return m, ok
}

// Operator is the operator certificate, with the trust bundle the
// cert-authority returned it with, obtained once (a Bootstrap at the
// cert-authority).
func (c *Client) Operator(ctx context.Context) (*caclient.Issued, error) {
	return c.operatorCert(ctx)
}

// Compilers implements Monitors.
func (p *PortForward) Compilers(ctx context.Context) ([]Endpoint, error) {
	return p.namedPorts(ctx, CompilerName, AdminPort)
}

// NATSMonitors implements Monitors.
func (p *PortForward) NATSMonitors(ctx context.Context) ([]Endpoint, error) {
	return p.namedPorts(ctx, NATSName, MonitorPort)
}

// Admins implements Monitors: the port admin of every ready pod of the
// mesh (label app.kubernetes.io/part-of=osm) that has one.
func (p *PortForward) Admins(ctx context.Context) ([]Endpoint, error) {
	list, err := p.Kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: PartOfLabel + "=osm"})
	if err != nil {
		return nil, fmt.Errorf("the mesh's pods in namespace %s: %w", p.Namespace, err)
	}
	var out []Endpoint
	for i := range list.Items {
		pod := &list.Items[i]
		n, err := containerPort(pod, intstr.FromString(AdminPort))
		if !podReady(pod) || err != nil {
			continue
		}
		addr, err := p.forward(ctx, pod, n)
		if err != nil {
			return out, err
		}
		out = append(out, Endpoint{Name: pod.Name, Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ready pod of the mesh with a port %s in namespace %s (%d pods): check kubectl get pods -n %s -l %s=osm", AdminPort, p.Namespace, len(list.Items), p.Namespace, PartOfLabel)
	}
	return out, nil
}

// namedPorts forwards to the port named port of every ready pod of the
// release's component name.
func (p *PortForward) namedPorts(ctx context.Context, name, port string) ([]Endpoint, error) {
	list, err := p.Kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil {
		return nil, fmt.Errorf("pods %s in namespace %s: %w", name, p.Namespace, err)
	}
	var out []Endpoint
	for i := range list.Items {
		pod := &list.Items[i]
		if !podReady(pod) {
			continue
		}
		n, err := containerPort(pod, intstr.FromString(port))
		if err != nil {
			return nil, err
		}
		addr, err := p.forward(ctx, pod, n)
		if err != nil {
			return nil, err
		}
		out = append(out, Endpoint{Name: pod.Name, Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ready pod %s in namespace %s (%d pods): check kubectl get pods -n %s -l app.kubernetes.io/name=%s", name, p.Namespace, len(list.Items), p.Namespace, name)
	}
	return out, nil
}

// Admins implements Monitors: the file's admins, else its compilers.
func (c *ContextFile) Admins(ctx context.Context) ([]Endpoint, error) {
	if len(c.File.Admins) == 0 {
		return c.Compilers(ctx)
	}
	return c.endpoints("admins", c.File.Admins)
}

// Compilers implements Monitors.
func (c *ContextFile) Compilers(context.Context) ([]Endpoint, error) {
	return c.endpoints("compilers", c.File.Compilers)
}

// NATSMonitors implements Monitors.
func (c *ContextFile) NATSMonitors(context.Context) ([]Endpoint, error) {
	return c.endpoints("natsMonitors", c.File.NATSMonitors)
}

func (c *ContextFile) endpoints(field string, eps []osmctx.Endpoint) ([]Endpoint, error) {
	if len(eps) == 0 {
		return nil, fmt.Errorf("osm context %s names no %s (the dev stack writes them: restart make run)", c.Path, field)
	}
	out := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		out = append(out, Endpoint{Name: e.Name, Addr: e.Addr})
	}
	return out, nil
}
