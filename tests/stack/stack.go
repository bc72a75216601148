// Package stack boots the whole mesh for the end-to-end tests and the local
// dev stack: an embedded NATS server with one user per role (StartNATS),
// and the cert-authority, injector-webhook, smi-watcher, policy-compiler
// and xds-edge, each built from services/<name> on its own (GOWORK=off, as
// an image build would) and run as a process against a given Kubernetes
// cluster (New, then Mesh.Start).
//
//	m, err := stack.New(ctx, stack.Options{Cluster: cluster, Dir: dir})
//	defer m.Close()
//	err = m.Start(ctx, stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
//	conn, err := m.DialEdge(proxyCert)
//
// The services' flags are spelled in flags.go only.
package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/logging"
)

// RepoRoot is the repository root, found from this package's source.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Builder builds service binaries into Dir, each at most once.
type Builder struct {
	dir   string
	root  string
	mu    sync.Mutex
	built map[string]string
}

// NewBuilder returns a builder of this checkout's services writing
// binaries into dir.
func NewBuilder(dir string) *Builder { return NewBuilderAt(dir, RepoRoot()) }

// NewBuilderAt returns a builder of the services of the source tree at
// root (another commit's tree, say) writing binaries into dir.
func NewBuilderAt(dir, root string) *Builder {
	return &Builder{dir: dir, root: root, built: map[string]string{}}
}

// Use makes Build return bin for name instead of building it: a mesh whose
// components come from different builds (a version-skew test).
func (b *Builder) Use(name, bin string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.built[name] = bin
}

// Build builds services/<name> of the builder's source tree and returns
// the binary's path.
func (b *Builder) Build(ctx context.Context, name string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bin, ok := b.built[name]; ok {
		return bin, nil
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(b.dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(b.root, "services", name)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, out)
	}
	b.built[name] = bin
	return bin, nil
}

// Proc is a running service.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *logging.Buffer
	done chan struct{}
	err  error
}

// Start runs bin with args and the extra environment env. Output goes to
// the process's buffer and, when tee is not nil, to tee too. The kernel
// kills the process if this one dies.
func Start(name, bin string, args []string, env map[string]string, tee io.Writer) (*Proc, error) {
	p := &Proc{Name: name, out: &logging.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	var w io.Writer = p.out
	if tee != nil {
		w = io.MultiWriter(p.out, tee)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// Output returns what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for the process to exit; it reports an
// unclean exit, and kills the process after timeout.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM", p.Name, p.err)
		}
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.Name, timeout)
	}
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill kills the process with SIGKILL and waits until it has exited.
func (p *Proc) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Ready asks the service's admin listener whether it is ready.
func (p *Proc) Ready(adminAddr string) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.Name, p.err)
	default:
	}
	return apptest.Ready(adminAddr)
}

// WaitReady waits until the service is ready, it exits, or within passes.
func (p *Proc) WaitReady(ctx context.Context, adminAddr string, within time.Duration) error {
	return Eventually(ctx, within, func() error { return p.Ready(adminAddr) })
}

// Eventually retries f until it succeeds, ctx ends or within passes; it
// returns f's last error (see apptest.Poll).
func Eventually(ctx context.Context, within time.Duration, f func() error) error {
	return apptest.Poll(ctx, within, f)
}

// FreeAddr returns a free loopback address, never one it returned before in
// this process (see apptest.PickAddr).
func FreeAddr() (string, error) { return apptest.PickAddr() }
