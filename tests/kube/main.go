package kube

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"
)

// Main runs a test package against one cluster, for a TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, true)) }
//
// It starts the cluster (building kubebox first if needed), installs the
// CRDs of deploy/charts/osm/crds when withCRDs is set, stores the cluster
// in *into, runs each setup (whose cleanup runs after the tests, in reverse order),
// runs the tests and stops the cluster. It returns the exit code.
func Main(m *testing.M, into **Cluster, withCRDs bool, setup ...func(context.Context, *Cluster) (func(), error)) int {
	return MainOptions(m, Options{}, into, withCRDs, setup...)
}

// MainOptions is Main with the cluster's Options, e.g. an AuditPolicy.
// The build output goes to stderr and progress to the log package unless
// o sets them.
func MainOptions(m *testing.M, o Options, into **Cluster, withCRDs bool, setup ...func(context.Context, *Cluster) (func(), error)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	if o.Build.Output == nil {
		o.Build.Output = os.Stderr
	}
	if o.Logf == nil {
		o.Logf = log.Printf
	}
	c, err := StartCluster(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start kube cluster:", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube cluster:", err)
		}
	}()
	if withCRDs {
		dir, err := CRDDir()
		if err == nil {
			err = c.ApplyCRDs(ctx, dir)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "install CRDs:", err)
			return 1
		}
	}
	*into = c
	for _, s := range setup {
		cleanup, err := s(ctx, c)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
		if cleanup != nil {
			defer cleanup()
		}
	}
	return m.Run()
}
