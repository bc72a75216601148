package compile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// tlsMeshConfig is the synth MeshConfig with sidecar TLS settings sc.
func tlsMeshConfig(sc *meshv1.SidecarSpec) synth.Object {
	o := synth.MeshConfig(false)
	o.Msg.(*meshv1.MeshConfig).Sidecar = sc
	return o
}

// tlsParamsOf are the tls_params of cluster name's upstream TLS and of
// every filter chain of inbound listener in.
func tlsParamsOf(t *testing.T, e *Engine, cluster, in string) (*tlsv3.TlsParameters, []*tlsv3.TlsParameters) {
	t.Helper()
	c := decode(t, e, layout.TypeCluster, cluster, &clusterv3.Cluster{})
	up := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{}).GetCommonTlsContext().GetTlsParams()
	var down []*tlsv3.TlsParameters
	for _, fc := range decode(t, e, layout.TypeListener, in, &listenerv3.Listener{}).GetFilterChains() {
		down = append(down, unpack(t, fc.GetTransportSocket().GetTypedConfig(), &tlsv3.DownstreamTlsContext{}).GetCommonTlsContext().GetTlsParams())
	}
	if len(down) == 0 {
		t.Fatalf("listener %s has no filter chain", in)
	}
	return up, down
}

// TestTLSParamsGolden: the MeshConfig's spec.sidecar TLS versions, cipher
// suites and curves are the tls_params of the EDS cluster, the headless
// ORIGINAL_DST cluster and the inbound listener; every resource passes
// ValidateAll and equals testdata/tls_params.golden.
func TestTLSParamsGolden(t *testing.T) {
	e := newEngine()
	load(t, e, append(synth.BookstoreShapes(), tlsMeshConfig(&meshv1.SidecarSpec{
		TlsMinProtocolVersion: "TLSv1_2", TlsMaxProtocolVersion: "TLSv1_3",
		CipherSuites: []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-RSA-AES256-GCM-SHA384"},
		EcdhCurves:   []string{"X25519", "P-256"},
	})))
	validateAll(t, e)
	got := dumpIf(t, e, func(key string) bool {
		return key == "cluster bookwarehouse/cache|6379" || key == "cluster bookwarehouse/cache|6379|direct" ||
			key == "listener inbound-listener:bookwarehouse/cache"
	})
	path := filepath.Join("testdata", "tls_params.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("compiled output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(got)))
	}
}

// TestTLSParams: each field alone reaches both sides; values
// libs/meshconfig refuses never reach Envoy; a MeshConfig edit that
// removes them gives Envoy's defaults back (the incremental path).
func TestTLSParams(t *testing.T) {
	const cl, in = "bookwarehouse/cache|6379", "inbound-listener:bookwarehouse/cache"
	cases := []struct {
		name string
		sc   *meshv1.SidecarSpec
		want *tlsv3.TlsParameters
	}{
		{"none", nil, nil},
		{"minimum", &meshv1.SidecarSpec{TlsMinProtocolVersion: "TLSv1_3"},
			&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}},
		{"maximum", &meshv1.SidecarSpec{TlsMaxProtocolVersion: "TLSv1_2"},
			&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}},
		{"cipher suites", &meshv1.SidecarSpec{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}},
			&tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}}},
		{"curves", &meshv1.SidecarSpec{EcdhCurves: []string{"P-384"}},
			&tlsv3.TlsParameters{EcdhCurves: []string{"P-384"}}},
		{"unknown names dropped", &meshv1.SidecarSpec{TlsMinProtocolVersion: "TLS1.2", CipherSuites: []string{"RC4-MD5", "AES128-SHA"}, EcdhCurves: []string{"brainpool"}},
			&tlsv3.TlsParameters{CipherSuites: []string{"AES128-SHA"}}},
		{"minimum above maximum dropped", &meshv1.SidecarSpec{TlsMinProtocolVersion: "TLSv1_3", TlsMaxProtocolVersion: "TLSv1_2"}, nil},
	}
	e := newEngine()
	load(t, e, synth.BookstoreShapes())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := tlsMeshConfig(c.sc)
			if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
				t.Fatal(err)
			}
			if d := e.Compile(); len(d.Invalid) > 0 {
				t.Fatalf("invalid: %v", d.Invalid)
			}
			validateAll(t, e)
			up, down := tlsParamsOf(t, e, cl, in)
			if diff := cmp.Diff(c.want, up, protocmp.Transform()); diff != "" {
				t.Errorf("upstream tls_params (-want +got):\n%s", diff)
			}
			for _, d := range down {
				if !proto.Equal(d, c.want) {
					t.Errorf("downstream tls_params %v, want %v", d, c.want)
				}
			}
		})
	}
}
