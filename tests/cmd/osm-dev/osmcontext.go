package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/osmctx"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// osmContextFile is the context file the osm CLI reads ($OSM_CONTEXT or
// --osm-context), in the state directory.
const osmContextFile = "osm-context.json"

// writeOSMContext points the osm CLI at the dev stack, which runs the
// components as processes with no kubelet to port-forward to: it creates
// the ServiceAccount osm-operator (as the chart does; its token is what
// the CA exchanges for the operator certificate), restarts the edge with
// its debug API on a free loopback port, and writes the context file with
// the CA's and the edge's addresses, the CA's roots and the kubeconfig.
func writeOSMContext(ctx context.Context, dir string, m *stack.Mesh, cluster *kube.Cluster, say func(string, ...any)) error {
	_, err := cluster.Clientset().CoreV1().ServiceAccounts(controlPlaneNS).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "osm-operator"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("operator ServiceAccount: %w", err)
	}
	debugAddr, err := stack.FreeAddr()
	if err != nil {
		return err
	}
	if err := m.Restart(ctx, stack.Edge, "--debug-addr", debugAddr); err != nil {
		return fmt.Errorf("restart the edge with its debug API: %w", err)
	}
	roots := filepath.Join(dir, "osm-ca-roots.pem")
	if err := os.WriteFile(roots, caclient.RootsPEM(m.Bundle()), 0o600); err != nil {
		return fmt.Errorf("write the CA's roots: %w", err)
	}
	path := filepath.Join(dir, osmContextFile)
	f := &osmctx.File{
		Kubeconfig: cluster.KubeconfigPath(), Namespace: controlPlaneNS, CARootsFile: roots,
		CertAuthority: osmctx.Endpoint{Addr: m.Addr(stack.CertAuthority), ServerName: m.CAServerName()},
		Edges:         []osmctx.Endpoint{{Name: "osm-dev-edge-0", Addr: debugAddr}},
		// osm verify reads the compiler's /metrics and NATS's monitoring
		Compilers: []osmctx.Endpoint{{Name: "osm-dev-compiler", Addr: m.AdminAddr(stack.Compiler)}},
	}
	// osm bug-report snapshots every component's /metrics
	for _, c := range m.Started() {
		f.Admins = append(f.Admins, osmctx.Endpoint{Name: "osm-dev-" + string(c), Addr: m.AdminAddr(c)})
	}
	for i, u := range m.NATS().MonitorURLs() {
		f.NATSMonitors = append(f.NATSMonitors, osmctx.Endpoint{Name: fmt.Sprintf("osm-dev-nats-%d", i), Addr: strings.TrimPrefix(u, "http://")})
	}
	if err := osmctx.Write(path, f); err != nil {
		return err
	}
	say("edge debug API on %s; the osm CLI's context is %s: export %s=%s, then osm proxy list (make osm builds .bin/osm)",
		debugAddr, path, osmctx.EnvVar, path)
	return nil
}
