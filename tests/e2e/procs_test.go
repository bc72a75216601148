package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openservicemesh/osm/tests/stack"
)

// builder builds the services once per test binary.
var builder *stack.Builder

// proc wraps a running service for tests.
type proc struct {
	*stack.Proc
}

// start runs services/<name> with args and env; the test's cleanup stops
// it and, when the test failed, prints its output.
func start(t testing.TB, name string, args []string, env map[string]string) *proc {
	t.Helper()
	bin, err := builder.Build(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := stack.Start(name, bin, args, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.Output())
		}
	})
	return &proc{p}
}

func (p *proc) stop(t testing.TB) {
	t.Helper()
	if err := p.Stop(30 * time.Second); err != nil {
		t.Error(err)
	}
}

func (p *proc) waitReady(t testing.TB, adminAddr string) {
	t.Helper()
	if err := p.WaitReady(t.Context(), adminAddr, 60*time.Second); err != nil {
		t.Fatalf("%s ready: %v", p.Name, err)
	}
}

func eventually(t testing.TB, what string, within time.Duration, f func() error) {
	t.Helper()
	if err := stack.Eventually(t.Context(), within, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
