package soak

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/tests/stack"
)

// The roots of the rotation: the CA's default root Secret and the new one.
const (
	oldRoot = "osm-ca-root"
	newRoot = "osm-ca-root-soak"
)

// edgeProc is one edge replica: edge 0 is the stack's; edge 1 a second
// process with edge 0's flags and environment but its own listeners and
// pod name (tests/stack starts one process per component).
type edgeProc struct {
	i           int
	addr, admin string
	args        []string
	env         map[string]string
	proc        *stack.Proc // edge 1 only
}

// startEdges records edge 0 and starts edge 1.
func (s *soak) startEdges(ctx context.Context) error {
	e0 := &edgeProc{i: 0, addr: s.m.Addr(stack.Edge), admin: s.m.AdminAddr(stack.Edge)}
	pid, err := pidByAdmin(e0.admin)
	if err != nil {
		return err
	}
	args, env, err := procArgs(pid)
	if err != nil {
		return err
	}
	e1 := &edgeProc{i: 1, env: env}
	if e1.addr, err = stack.FreeAddr(); err != nil {
		return err
	}
	if e1.admin, err = stack.FreeAddr(); err != nil {
		return err
	}
	set := map[string]string{"--listen-addr": e1.addr, "--admin-addr": e1.admin, "--pod-name": "soak-edge-1"}
	if s.partition != nil {
		set["--nats-url"] = s.partition.URL()
	}
	e1.args = replaceFlags(args, set)
	s.edges = []*edgeProc{e0, e1}
	s.edgeAddrs = []string{e0.addr, e1.addr}
	return s.startEdge1(ctx)
}

// startEdge1 starts edge 1's process and waits until it is ready.
func (s *soak) startEdge1(ctx context.Context) error {
	e := s.edges[1]
	bin, err := s.builder().Build(ctx, string(stack.Edge))
	if err != nil {
		return err
	}
	// Its --ca-trust-file holds the bundle's roots now, as the stack
	// writes it for each edge it starts (and a mounted ConfigMap would).
	if f := flagValue(e.args, "--ca-trust-file"); f != "" && s.certs != nil {
		if err := os.WriteFile(f, caclient.RootsPEM(s.certs.bundleNow()), 0o600); err != nil {
			return err
		}
	}
	if e.proc, err = stack.Start("xds-edge-1", bin, e.args, e.env, s.cfg.Log); err != nil {
		return err
	}
	if err := e.proc.WaitReady(ctx, e.admin, 2*time.Minute); err != nil {
		return fmt.Errorf("edge 1: %w\n%s", err, e.proc.Output())
	}
	return nil
}

func (s *soak) builder() *stack.Builder {
	if s.cfg.Builder == nil {
		s.cfg.Builder = stack.NewBuilder(filepath.Join(s.cfg.Dir, "stack", "bin"))
	}
	return s.cfg.Builder
}

// stopEdge1 stops edge 1 at the end.
func (s *soak) stopEdge1() {
	if len(s.edges) > 1 && s.edges[1].proc != nil {
		_ = s.edges[1].proc.Stop(30 * time.Second)
	}
}

// inject injects f and returns when the component is back.
func (s *soak) inject(ctx context.Context, f Fault) error {
	switch f.Kind {
	case RootAdd:
		return s.rotate(ctx, f, []string{"--trusted-root-secrets", newRoot})
	case RootSwitch:
		return s.rotate(ctx, f, []string{"--root-secret", newRoot, "--trusted-root-secrets", oldRoot})
	case RootRemove:
		return s.rotate(ctx, f, []string{"--root-secret", newRoot, "--trusted-root-secrets", ""})
	case CompilerKill:
		return s.killCompiler(ctx)
	case EdgeKill:
		return s.killEdge(ctx, f.Edge)
	case NATSRestart:
		return s.restartNATS(ctx)
	}
	return fmt.Errorf("unknown fault %q", f.Kind)
}

// rotate restarts the CA with a rotation step's flags, then tracks the
// step to every proxy: the new bundle in its root-cert (steps 1 and 3),
// a service-cert issued by the new root (step 2).
func (s *soak) rotate(ctx context.Context, f Fault, flags []string) error {
	before := s.certs.bundleNow()
	start := time.Now()
	if err := s.m.Restart(ctx, stack.CertAuthority, flags...); err != nil {
		return err
	}
	// The CA has published the step's bundle once it is ready.
	if err := s.certs.readBundle(ctx, s.currentNATS()); err != nil {
		return err
	}
	b := s.certs.bundleNow()
	timeout := s.cfg.CertTTL + 30*time.Second
	switch f.Kind {
	case RootAdd, RootRemove:
		want := map[FaultKind]int{RootAdd: 2, RootRemove: 1}[f.Kind]
		if len(b.GetRoots()) != want {
			return fmt.Errorf("the bundle holds %d roots after the step, want %d", len(b.GetRoots()), want)
		}
		if b.GetVersion() == before.GetVersion() {
			return fmt.Errorf("the bundle's version %s did not change", b.GetVersion())
		}
		return s.edits.rotation(ctx, f.name(), start, resourcev3.SecretType, timeout, func(p *proxy) bool { return p.rootVersion() == b.GetVersion() })
	case RootSwitch:
		var signing []byte
		for _, r := range b.GetRoots() {
			if r.GetSigning() {
				signing = r.GetCertificatePem()
			}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(signing) {
			return errors.New("the bundle names no signing root")
		}
		for _, r := range before.GetRoots() {
			if r.GetSigning() && bytes.Equal(r.GetCertificatePem(), signing) {
				return errors.New("the signing root did not change")
			}
		}
		return s.edits.rotation(ctx, f.name(), start, resourcev3.SecretType, timeout, func(p *proxy) bool {
			leaf := p.serviceCert()
			if leaf == nil {
				return false
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err == nil
		})
	}
	return nil
}

// killCompiler writes half a burst of edits, kills the compiler with
// SIGKILL, writes the other half, and starts the compiler again.
func (s *soak) killCompiler(ctx context.Context) error {
	n := len(s.apps) // start the burst half a round away from the edit loop
	var killedAt time.Time
	err := s.edits.burst(ctx, &n, s.cfg.BurstEdits, func() error {
		pid, err := pidByAdmin(s.m.AdminAddr(stack.Compiler))
		if err != nil {
			return err
		}
		killedAt = time.Now()
		return syscall.Kill(pid, syscall.SIGKILL)
	})
	if killedAt.IsZero() {
		return err
	}
	<-s.m.Proc(stack.Compiler).Exited()
	return errors.Join(err, s.m.Restart(ctx, stack.Compiler))
}

// killEdge kills edge i with SIGKILL and starts it again, with no state,
// after EdgeDown.
func (s *soak) killEdge(ctx context.Context, i int) error {
	e := s.edges[i]
	pid, err := pidByAdmin(e.admin)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.cfg.EdgeDown):
	}
	if i == 0 {
		return s.m.Restart(ctx, stack.Edge)
	}
	<-e.proc.Exited()
	return s.startEdge1(ctx)
}

// restartNATS stops the NATS server and starts it again on the same port
// and store after NATSDown, then waits until the services are ready.
func (s *soak) restartNATS(ctx context.Context) error {
	s.natsMu.Lock()
	s.nats.Close()
	s.natsMu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.cfg.NATSDown):
	}
	nc, err := stack.StartNATS(ctx, s.natsOpts)
	if err != nil {
		return err
	}
	s.natsMu.Lock()
	s.nats = nc
	s.natsMu.Unlock()
	admins := []string{s.m.AdminAddr(stack.CertAuthority), s.m.AdminAddr(stack.Watcher), s.m.AdminAddr(stack.Compiler), s.edges[0].admin, s.edges[1].admin}
	return stack.Eventually(ctx, time.Minute, func() error {
		for _, a := range admins {
			if err := apptest.Ready(a); err != nil {
				return fmt.Errorf("%s: %w", a, err)
			}
		}
		return nil
	})
}

// pidByAdmin finds the process serving its admin listener at addr (every
// service of the stack has its own).
func pidByAdmin(addr string) (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := "\x00--admin-addr\x00" + addr + "\x00"
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b)+"\x00", want) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with --admin-addr %s", addr)
}

// procArgs reads a process's arguments and its OSM_ environment.
func procArgs(pid int) ([]string, map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, nil, err
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")[1:]
	eb, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, nil, err
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(eb), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "OSM_") {
			env[k] = v
		}
	}
	return args, env, nil
}

// flagValue is the value of "--flag value" in args.
func flagValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// replaceFlags sets the values of the "--flag value" pairs in args.
func replaceFlags(args []string, set map[string]string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if v, ok := set[out[i]]; ok {
			out[i+1] = v
		}
	}
	return out
}
