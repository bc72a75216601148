package bootstrap

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

// TestADSCertificateComesFromWatchedFiles: the sidecar must pick up a
// renewed client certificate and a new trust bundle without a restart
// (issue 15, item 1). The ADS cluster reads both through file-based SDS
// whose files, and the certificate files they name, are reloaded when the
// kubelet moves the Secret volume's ..data link.
func TestADSCertificateComesFromWatchedFiles(t *testing.T) {
	c := config()
	b, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	var xds *clusterv3.Cluster
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == clusterXDS {
			xds = cl
		}
	}
	var up tlsv3.UpstreamTlsContext
	if err := xds.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatal(err)
	}
	common := up.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) != 0 || common.GetValidationContext() != nil {
		t.Fatal("the ADS TLS context reads static files, which Envoy never reloads")
	}
	files, err := SDSFiles(c.ConfigDir)
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]*corev3.ConfigSource{}
	for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
		sources[sds.GetName()] = sds.GetSdsConfig()
	}
	combined := common.GetCombinedValidationContext()
	sources[combined.GetValidationContextSdsSecretConfig().GetName()] = combined.GetValidationContextSdsSecretConfig().GetSdsConfig()
	if got := combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(); len(got) != 1 || got[0].GetMatcher().GetExact() != c.XDSServerSAN {
		t.Fatalf("SAN matchers %v, want the edges' %s", got, c.XDSServerSAN)
	}
	for name, file := range map[string]string{SecretXDSClient: FileSDSCert, SecretXDSTrust: FileSDSCA} {
		src := sources[name].GetPathConfigSource()
		if src.GetPath() != filepath.Join(c.ConfigDir, file) || src.GetWatchedDirectory().GetPath() != c.ConfigDir {
			t.Fatalf("secret %s: source %v, want %s watched in %s", name, sources[name], file, c.ConfigDir)
		}
		// The file holds exactly the named secret, whose files are in the
		// watched directory too.
		var dr discoveryv3.DiscoveryResponse
		if err := protojson.Unmarshal(files[file], &dr); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(dr.GetResources()) != 1 {
			t.Fatalf("%s: %d resources, Envoy wants exactly 1", file, len(dr.GetResources()))
		}
		var s tlsv3.Secret
		if err := dr.GetResources()[0].UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if err := s.ValidateAll(); err != nil || s.GetName() != name {
			t.Fatalf("%s: secret %q (%v)", file, s.GetName(), err)
		}
		watched := s.GetTlsCertificate().GetWatchedDirectory().GetPath() + s.GetValidationContext().GetWatchedDirectory().GetPath()
		if watched != c.ConfigDir {
			t.Fatalf("%s: watched directory %q", file, watched)
		}
		golden := filepath.Join("testdata", file)
		if *update {
			if err := os.WriteFile(golden, append(files[file], '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		var want discoveryv3.DiscoveryResponse
		if err := protojson.Unmarshal(raw, &want); err != nil || !proto.Equal(&want, &dr) {
			t.Fatalf("%s differs from %s (%v):\n%s", file, golden, err, files[file])
		}
	}
}
