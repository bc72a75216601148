package access

import (
	"context"
	"fmt"
	"os"

	"github.com/openservicemesh/osm/libs/osmctx"
)

// ContextFile dials the addresses a context file names (the dev stack's,
// the test harness's).
type ContextFile struct {
	File *osmctx.File
	// Path is where File was read, for errors.
	Path string
}

var _ Dialer = (*ContextFile)(nil)

// CertAuthority implements Dialer.
func (c *ContextFile) CertAuthority(context.Context) (Endpoint, error) {
	ca := c.File.CertAuthority
	return Endpoint{Name: "cert-authority", Addr: ca.Addr, ServerName: ca.ServerName}, nil
}

// Edges implements Dialer.
func (c *ContextFile) Edges(context.Context) ([]Endpoint, error) {
	out := make([]Endpoint, 0, len(c.File.Edges))
	for _, e := range c.File.Edges {
		out = append(out, Endpoint{Name: e.Name, Addr: e.Addr})
	}
	return out, nil
}

// CARoots implements Dialer.
func (c *ContextFile) CARoots(context.Context) ([]byte, error) {
	b, err := os.ReadFile(c.File.CARootsFile)
	if err != nil {
		return nil, fmt.Errorf("osm context %s: caRootsFile: %w", c.Path, err)
	}
	return b, nil
}

// Close implements Dialer.
func (c *ContextFile) Close() {}
