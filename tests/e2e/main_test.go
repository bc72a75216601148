package e2e

import (
	"context"
	"log"
	"os"
	"testing"
	"time"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

var cluster *kube.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	c, err := kube.StartCluster(ctx, kube.Options{Logf: log.Printf})
	if err == nil {
		var dir string
		if dir, err = kube.CRDDir(); err == nil {
			err = c.ApplyCRDs(ctx, dir)
		}
	}
	cancel()
	if err != nil {
		log.Fatalf("start kube cluster: %v", err)
	}
	cluster = c
	binDir, err := os.MkdirTemp("", "osm-e2e-bin-")
	if err != nil {
		log.Fatal(err)
	}
	builder = stack.NewBuilder(binDir)
	code := m.Run()
	if err := c.Stop(); err != nil {
		log.Printf("stop kube cluster: %v", err)
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}
