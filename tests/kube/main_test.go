package kube_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is the package's control plane, started once by TestMain.
var cluster *kube.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, err := kube.StartCluster(ctx, kube.Options{
		Build: kube.BuildOptions{Output: os.Stderr},
		Logf:  log.Printf,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start kube cluster:", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube cluster:", err)
		}
	}()
	dir, err := kube.CRDDir()
	if err == nil {
		err = c.ApplyCRDs(ctx, dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "install CRDs:", err)
		return 1
	}
	cluster = c
	return m.Run()
}
