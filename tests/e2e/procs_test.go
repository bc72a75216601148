package e2e

import (
	"testing"
	"time"

	"github.com/openservicemesh/osm/tests/stack"
)

// builder builds the services once per test binary.
var builder *stack.Builder

// startMesh boots a mesh against the test cluster with the components cs;
// its processes stop when the test ends, and their output is logged when
// the test failed.
func startMesh(t testing.TB, o stack.Options, cs ...stack.Component) *stack.Mesh {
	t.Helper()
	return startMeshWithin(t, 60*time.Second, o, cs...)
}

// startMeshWithin is startMesh that fails unless each component turns
// ready within d of its start.
func startMeshWithin(t testing.TB, d time.Duration, o stack.Options, cs ...stack.Component) *stack.Mesh {
	t.Helper()
	o.Cluster, o.Builder, o.Dir, o.ReadyTimeout = cluster, builder, t.TempDir(), d
	m, err := stack.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(m.Logs())
		}
	})
	if err := m.Start(t.Context(), cs...); err != nil {
		t.Fatal(err)
	}
	return m
}

// stop stops c and reports an unclean exit.
func stop(t testing.TB, m *stack.Mesh, c stack.Component) {
	t.Helper()
	if err := m.Stop(c); err != nil {
		t.Error(err)
	}
}

func eventually(t testing.TB, what string, within time.Duration, f func() error) {
	t.Helper()
	if err := stack.Eventually(t.Context(), within, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
