package stack

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

// NATSOptions configure the mesh's embedded NATS server.
type NATSOptions struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// StoreDir keeps the JetStream data across restarts; empty uses a
	// temporary directory that Close removes.
	StoreDir string
	// Passwords of the role users (user name = role name); a role left out
	// gets one from PasswordFile, else a random one.
	Passwords map[bus.Role]string
	// PasswordFile, when set, keeps the passwords in this JSON file (role
	// to password), so that a restart keeps the credentials: the roles it
	// lacks are added to it.
	PasswordFile string
	// Servers, when above 0, runs that many nats-server processes (the
	// real binary, at the version the tests module requires) instead of
	// an in-process server, so that a test can SIGKILL one (Kill) and
	// start it again on its store (StartServer). Two or more form a
	// JetStream cluster over loopback routes, and the buckets are
	// declared with Replicas replicas, as the mesh's writers are told
	// (--kv-replicas). Port, when set, is the first server's.
	Servers int
	// Builder builds nats-server for Servers; nil builds it into
	// StoreDir (or the temporary store directory).
	Builder *Builder
	// Log receives the nats-server processes' output.
	Log io.Writer
}

// NATS is an embedded NATS server with JetStream, one user per role with
// the role's permissions, and the mesh buckets declared.
type NATS struct {
	srv     *bustest.Server // in-process; nil with Servers
	nodes   []*natsd        // processes, with Servers
	tempDir string          // the processes' store when StoreDir was empty
	pw      map[bus.Role]string
	admin   *bus.Conn
}

// StartNATS starts the server, declares the mesh buckets and keeps an
// admin connection open.
func StartNATS(ctx context.Context, o NATSOptions) (*NATS, error) {
	pw, err := passwords(o)
	if err != nil {
		return nil, err
	}
	n := &NATS{pw: pw}
	if o.Servers > 0 {
		dir := o.StoreDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "osm-nats-"); err != nil {
				return nil, err
			}
			n.tempDir = dir
		}
		if n.nodes, err = startServers(ctx, o, dir, pw); err != nil {
			n.removeTemp()
			return nil, fmt.Errorf("start nats: %w", err)
		}
	} else if n.srv, err = bustest.Start(bustest.Options{Port: o.Port, StoreDir: o.StoreDir, Passwords: pw, Monitor: true}); err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	n.admin, err = n.Connect(ctx, bus.RoleAdmin, "osm-stack")
	if err == nil {
		// A new cluster may refuse JetStream requests for a moment after
		// its servers turned healthy.
		err = Eventually(ctx, 30*time.Second, func() error {
			return bus.EnsureBuckets(ctx, n.admin.JetStream(), bus.BucketOptions{Replicas: n.Replicas()})
		})
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("nats admin: %w", err)
	}
	return n, nil
}

// Replicas is the replication factor of the mesh buckets: 1 on one
// server, up to 3 in a cluster.
func (n *NATS) Replicas() int { return min(max(len(n.nodes), 1), 3) }

// Servers is the number of nats-server processes (0 in-process).
func (n *NATS) Servers() int { return len(n.nodes) }

// ServerURL is the client URL of server i of Servers.
func (n *NATS) ServerURL(i int) string { return n.nodes[i].url() }

// MonitorURL is the monitoring endpoint of server i of Servers
// (/healthz, /jsz: what that server itself holds).
func (n *NATS) MonitorURL(i int) string { return "http://" + n.nodes[i].monitor }

// MonitorURLs are the monitoring endpoints of every server, the
// in-process one's included.
func (n *NATS) MonitorURLs() []string {
	if n.srv != nil {
		return []string{"http://" + n.srv.MonitorAddr()}
	}
	out := make([]string, len(n.nodes))
	for i := range n.nodes {
		out[i] = n.MonitorURL(i)
	}
	return out
}

// ServerName is the server_name of server i of Servers, as JetStream's
// cluster info names it.
func (n *NATS) ServerName(i int) string { return n.nodes[i].name }

// Kill kills server i of Servers with SIGKILL and waits until it is gone;
// its store stays for StartServer.
func (n *NATS) Kill(i int) error {
	if i >= len(n.nodes) {
		return fmt.Errorf("stack: no nats-server process %d (Options.Servers)", i)
	}
	return n.nodes[i].proc.Kill()
}

// StartServer starts server i of Servers again, on its ports and store,
// and waits until it is healthy (JetStream current with its cluster).
func (n *NATS) StartServer(ctx context.Context, i int) error {
	if i >= len(n.nodes) {
		return fmt.Errorf("stack: no nats-server process %d (Options.Servers)", i)
	}
	nd := n.nodes[i]
	select {
	case <-nd.proc.Exited():
	default:
		return fmt.Errorf("stack: nats-server %s is running", nd.name)
	}
	// The port may take a moment to be free again.
	err := Eventually(ctx, 10*time.Second, func() error {
		if err := nd.start(); err != nil {
			return err
		}
		select {
		case <-nd.proc.Exited():
			return fmt.Errorf("%s exited at start: %s", nd.name, lastLine(nd.proc.Output()))
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	})
	if err != nil {
		return err
	}
	return nd.waitHealthy(ctx, time.Minute)
}

func (n *NATS) removeTemp() {
	if n.tempDir != "" {
		_ = os.RemoveAll(n.tempDir)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// passwords are the role users' passwords: o.Passwords, then those in
// o.PasswordFile, then random ones, which are added to the file.
func passwords(o NATSOptions) (map[bus.Role]string, error) {
	saved := map[bus.Role]string{}
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err == nil {
			err = json.Unmarshal(b, &saved)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("nats passwords: %w", err)
		}
	}
	pw, changed := map[bus.Role]string{}, false
	for _, r := range bus.Roles() {
		pw[r] = cmp.Or(o.Passwords[r], saved[r])
		if pw[r] == "" {
			s, err := randomHex(16)
			if err != nil {
				return nil, err
			}
			pw[r], saved[r], changed = s, s, true
		}
	}
	if o.PasswordFile != "" && changed {
		b, _ := json.MarshalIndent(saved, "", "  ")
		if err := os.WriteFile(o.PasswordFile, b, 0o600); err != nil {
			return nil, fmt.Errorf("nats passwords: %w", err)
		}
	}
	return pw, nil
}

// URL is the server's client URL; with Servers, every server's, comma
// separated, as the services' --nats-url takes them.
func (n *NATS) URL() string {
	if n.srv != nil {
		return n.srv.URL()
	}
	urls := make([]string, len(n.nodes))
	for i, nd := range n.nodes {
		urls[i] = nd.url()
	}
	return strings.Join(urls, ",")
}

// Password returns the password of role's user.
func (n *NATS) Password(r bus.Role) string { return n.pw[r] }

// Passwords returns every role user's password.
func (n *NATS) Passwords() map[bus.Role]string { return maps.Clone(n.pw) }

// Connect opens a connection as role's user, named name.
func (n *NATS) Connect(ctx context.Context, r bus.Role, name string) (*bus.Conn, error) {
	c, err := bus.Connect(ctx, bus.Options{URL: n.URL(), Name: name, Role: r, User: string(r), Password: n.pw[r]})
	if err != nil {
		return nil, fmt.Errorf("connect to nats as %s: %w", r, err)
	}
	return c, nil
}

// Admin is the admin connection the server was started with.
func (n *NATS) Admin() *bus.Conn { return n.admin }

// Close closes the admin connection and stops the servers.
func (n *NATS) Close() {
	if n.admin != nil {
		n.admin.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
	}
	for _, nd := range n.nodes {
		_ = nd.proc.Stop(stopTimeout)
	}
	n.removeTemp()
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
