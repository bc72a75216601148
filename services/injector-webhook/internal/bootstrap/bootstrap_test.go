package bootstrap

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func config() Config {
	return Config{
		ProxyUUID: "6f1c1d0e-uuid", Namespace: "bookstore", ServiceAccount: "bookstore",
		XDSHost: "osm-xds-edge.osm-system.svc.cluster.local", XDSPort: 15128,
		XDSServerSAN: "spiffe://cluster.local/osm/xds-edge", ConfigDir: "/etc/envoy",
		AdminPort: 15000, MetricsPort: 15010,
		Probes: []Probe{{Kind: "liveness", ListenPort: 15901, ProbePath: "/osm-liveness-probe", Port: 14001, Path: "/healthz"}},
	}
}

// TestGolden compares semantically: protojson output is deliberately not
// byte-stable, so the golden file is parsed back and compared as a proto.
func TestGolden(t *testing.T) {
	b, err := Build(config())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "bookstore.bootstrap.json")
	if *update {
		out, err := Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	var want bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(raw, &want); err != nil {
		t.Fatalf("golden file does not parse as a Bootstrap: %v", err)
	}
	if !proto.Equal(b, &want) {
		got, _ := Marshal(b)
		t.Errorf("bootstrap differs from %s:\n%s", path, got)
	}
	// What Envoy reads must parse back to the same config.
	out, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(out, &back); err != nil || !proto.Equal(b, &back) {
		t.Fatalf("marshalled bootstrap does not round-trip: %v", err)
	}
	if b.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" {
		t.Fatal("admin listener is not on localhost")
	}
}

func TestRefusesIncompleteConfig(t *testing.T) {
	c := config()
	c.XDSHost = ""
	if _, err := Build(c); err == nil {
		t.Fatal("built a bootstrap without an xDS address")
	}
	c = config()
	c.XDSPort = 70000 // fails the socket address's port rule
	if _, err := Build(c); err == nil {
		t.Fatal("ValidateAll let an out-of-range xDS port through")
	}
}
