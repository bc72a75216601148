package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
)

// natsd is one nats-server process of NATSOptions.Servers: the real
// binary, with a config file the stack writes (the role users and their
// permissions, JetStream on its own store directory, the cluster routes),
// on ports it keeps across restarts.
type natsd struct {
	name            string
	client, cluster string // host:port
	monitor         string // host:port of /healthz
	conf            string
	proc            *Proc
	bin             string
	log             io.Writer
}

// natsServerPkg is the nats-server main package, at the version the tests
// module requires.
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// NATSServer builds the nats-server binary of the module version the
// tests module requires and returns its path.
func (b *Builder) NATSServer(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	const name = "nats-server"
	if bin, ok := b.built[name]; ok {
		return bin, nil
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(b.dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, natsServerPkg)
	cmd.Dir = filepath.Join(RepoRoot(), "tests")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", natsServerPkg, err, out)
	}
	b.built[name] = bin
	return bin, nil
}

// startServers starts o.Servers nats-server processes in dir and waits
// until each is healthy (JetStream current, in a cluster once it has a
// meta leader).
func startServers(ctx context.Context, o NATSOptions, dir string, pw map[bus.Role]string) ([]*natsd, error) {
	b := o.Builder
	if b == nil {
		b = NewBuilder(filepath.Join(dir, "bin"))
	}
	bin, err := b.NATSServer(ctx)
	if err != nil {
		return nil, err
	}
	nodes := make([]*natsd, o.Servers)
	for i := range nodes {
		n := &natsd{name: fmt.Sprintf("osm-nats-%d", i), bin: bin, log: o.Log, conf: filepath.Join(dir, fmt.Sprintf("osm-nats-%d.conf", i))}
		if i == 0 && o.Port != 0 {
			n.client = fmt.Sprintf("127.0.0.1:%d", o.Port)
		} else if n.client, err = FreeAddr(); err != nil {
			return nil, err
		}
		if n.cluster, err = FreeAddr(); err != nil {
			return nil, err
		}
		if n.monitor, err = FreeAddr(); err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	for i, n := range nodes {
		var routes []string
		for j, m := range nodes {
			if j != i {
				routes = append(routes, "nats://"+m.cluster)
			}
		}
		if err := n.writeConf(filepath.Join(dir, n.name), routes, pw); err != nil {
			return nil, err
		}
	}
	var started []*natsd
	stopAll := func() {
		for _, n := range started {
			_ = n.proc.Stop(stopTimeout)
		}
	}
	for _, n := range nodes {
		if err := n.start(); err != nil {
			stopAll()
			return nil, err
		}
		started = append(started, n)
	}
	for _, n := range nodes {
		if err := n.waitHealthy(ctx, time.Minute); err != nil {
			stopAll()
			return nil, err
		}
	}
	return nodes, nil
}

// writeConf writes the server's config: JSON, which nats-server's config
// parser reads.
func (n *natsd) writeConf(store string, routes []string, pw map[bus.Role]string) error {
	var users []map[string]any
	for _, r := range bus.Roles() {
		u := map[string]any{"user": string(r), "password": pw[r]}
		perms, err := bus.PermissionsFor(r)
		if err != nil {
			return err
		}
		if perms != nil {
			u["permissions"] = map[string]any{
				"publish":   map[string]any{"allow": perms.Publish},
				"subscribe": map[string]any{"allow": perms.Subscribe},
			}
		}
		users = append(users, u)
	}
	conf := map[string]any{
		"server_name":   n.name,
		"listen":        n.client,
		"http":          n.monitor,
		"max_payload":   bus.MaxValueSize,
		"jetstream":     map[string]any{"store_dir": store},
		"authorization": map[string]any{"users": users},
	}
	if len(routes) > 0 {
		conf["cluster"] = map[string]any{"name": "osm", "listen": n.cluster, "routes": routes, "no_advertise": true}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the parser knows no \u escapes, and subjects hold '>'
	enc.SetIndent("", "  ")
	if err := enc.Encode(conf); err != nil {
		return err
	}
	if err := os.WriteFile(n.conf, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("nats config: %w", err)
	}
	return nil
}

func (n *natsd) url() string { return "nats://" + n.client }

// start starts the process on its config.
func (n *natsd) start() error {
	p, err := Start(n.name, n.bin, []string{"-c", n.conf}, nil, n.log)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// waitHealthy waits until the server's /healthz answers 200: JetStream
// enabled and current with its cluster.
func (n *natsd) waitHealthy(ctx context.Context, within time.Duration) error {
	healthy := func() error {
		resp, err := http.Get("http://" + n.monitor + "/healthz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
	deadline := time.Now().Add(within)
	for {
		err := healthy()
		if err == nil {
			return nil
		}
		select {
		case <-n.proc.Exited():
			return fmt.Errorf("nats-server %s exited:\n%s", n.name, n.proc.Output())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s: not healthy within %s: %w\n%s", n.name, within, err, n.proc.Output())
		}
	}
}
