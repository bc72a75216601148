// Package osmctx is the context file that points the osm CLI at a mesh
// whose components it cannot reach through the Kubernetes API: the local
// dev stack and the test harness run the components as processes, with no
// kubelet to port-forward to, so they write this file with the
// components' addresses and the CLI dials them directly. Everything else
// (the ServiceAccount token, the operator certificate from the
// cert-authority, the debug API calls) is the same as on a cluster.
package osmctx

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvVar names the context file when the CLI's --osm-context is not set.
const EnvVar = "OSM_CONTEXT"

// File is the context file's content (JSON).
type File struct {
	// Kubeconfig is the cluster's kubeconfig; the CLI's --kubeconfig wins.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Namespace is the control plane's namespace.
	Namespace string `json:"namespace"`
	// CARootsFile holds the PEM roots that verify the cert-authority.
	CARootsFile string `json:"caRootsFile"`
	// CertAuthority is the cert-authority's gRPC listener.
	CertAuthority Endpoint `json:"certAuthority"`
	// Edges are the xds-edge replicas' debug API listeners.
	Edges []Endpoint `json:"edges"`
	// Compilers are the policy-compiler replicas' admin listeners (plain
	// HTTP, /metrics), which osm verify reads for the latest generation
	// and the rejected policies; optional.
	Compilers []Endpoint `json:"compilers,omitempty"`
	// NATSMonitors are the NATS servers' monitoring listeners (plain HTTP,
	// /jsz), which osm verify reads for the buckets; optional.
	NATSMonitors []Endpoint `json:"natsMonitors,omitempty"`
	// Admins are every component's admin listener (plain HTTP, /metrics),
	// which osm bug-report snapshots; optional (then the compilers').
	Admins []Endpoint `json:"admins,omitempty"`
}

// Endpoint is one component's listener.
type Endpoint struct {
	// Name is the pod name (the edge's --pod-name).
	Name string `json:"name,omitempty"`
	// Addr is host:port.
	Addr string `json:"addr"`
	// ServerName is the name its serving certificate is verified against
	// (the cert-authority's; an edge is verified by its SPIFFE id).
	ServerName string `json:"serverName,omitempty"`
}

// Read reads and checks a context file; errors name the file and the field.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("osm context: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("osm context %s: %w", path, err)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("osm context %s: %w", path, err)
	}
	return &f, nil
}

func (f *File) check() error {
	switch {
	case f.Namespace == "":
		return errors.New("namespace is empty")
	case f.CARootsFile == "":
		return errors.New("caRootsFile is empty")
	case f.CertAuthority.Addr == "" || f.CertAuthority.ServerName == "":
		return errors.New("certAuthority needs addr and serverName")
	case len(f.Edges) == 0:
		return errors.New("edges is empty")
	}
	for i, e := range f.Edges {
		if e.Addr == "" || e.Name == "" {
			return fmt.Errorf("edges[%d] needs name and addr", i)
		}
	}
	return nil
}

// Write writes f to path (mode 0600), checked first.
func Write(path string, f *File) error {
	if err := f.check(); err != nil {
		return fmt.Errorf("osm context: %w", err)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
