package proxyless

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// serverListenerTemplate is the name template of an xDS-enabled gRPC
// server's listener, as the compiler names server listeners (gRFC A36).
const serverListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// envSPIFFE lets gRPC verify the xDS server against a SPIFFE trust
// bundle map (gRFC A87): the edge's certificate names it by its SPIFFE id
// only (no DNS or IP SAN), so plain "tls" channel creds with a
// ca_certificate_file, which check the host name of server_uri, refuse it.
const envSPIFFE = "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE"

// spiffeBundleMap is the mesh's trust bundle as a SPIFFE bundle map (a JWK
// set per trust domain, each root an x509-svid key with its certificate).
func spiffeBundleMap(t *testing.T, m *stack.Mesh) []byte {
	t.Helper()
	pool := caclient.RootsPEM(m.Bundle())
	var keys []any
	for rest := pool; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			t.Fatalf("root %s: a %T key; the bundle map here writes EC keys only", cert.Subject, cert.PublicKey)
		}
		raw, err := pub.Bytes() // uncompressed point: 0x04 || X || Y
		if err != nil {
			t.Fatal(err)
		}
		n := (len(raw) - 1) / 2
		b64 := base64.RawURLEncoding.EncodeToString
		keys = append(keys, map[string]any{
			"kty": "EC", "use": "x509-svid", "crv": pub.Curve.Params().Name,
			"x": b64(raw[1 : 1+n]), "y": b64(raw[1+n:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(cert.Raw)},
		})
	}
	out, err := json.Marshal(map[string]any{"trust_domains": map[string]any{stack.TrustDomain: map[string]any{"keys": keys}}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// workload is a proxyless pod's identity and the files its Secret volume
// would hold: the xDS client certificate, the service certificate, the
// mesh's roots and gRPC's xDS bootstrap.
type workload struct {
	id        identity.ID
	pod       string
	dir       string
	bootstrap string
}

// newWorkload issues pod's certificates through the mesh's CA (the xDS
// client certificate as the injector gets it, the service certificate as
// the edge gets it) and writes its bootstrap: the edge as xDS server over
// mTLS with the xDS client certificate (at xdsAddr, the edge's Service), the node's proxyless metadata, and
// the file_watcher provider layout.CertProviderInstance with the service
// certificate.
func newWorkload(t *testing.T, m *stack.Mesh, xdsAddr, ns, sa, pod string) *workload {
	t.Helper()
	w := &workload{id: identity.New(stack.TrustDomain, ns, sa), pod: pod, dir: t.TempDir()}
	xdsCert, err := m.WorkloadCert(t.Context(), w.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svcCert, err := m.ServiceCert(t.Context(), w.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"xds.crt": xdsCert.ChainPEM, "xds.key": xdsCert.KeyPEM,
		"svc.crt": svcCert.ChainPEM, "svc.key": svcCert.KeyPEM,
		"roots.pem":          caclient.RootsPEM(m.Bundle()),
		"spiffe-bundle.json": spiffeBundleMap(t, m),
	}
	for name, b := range files {
		if err := os.WriteFile(w.path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.MarshalIndent(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": xdsAddr,
			"channel_creds": []any{map[string]any{"type": "tls", "config": map[string]string{
				"spiffe_trust_bundle_map_file": w.path("spiffe-bundle.json"), "certificate_file": w.path("xds.crt"), "private_key_file": w.path("xds.key"),
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": pod, "cluster": sa + "." + ns,
			"metadata": map[string]any{layout.NodeMetadataProxyless: layout.ProxylessGRPC}},
		"certificate_providers": map[string]any{layout.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file": w.path("svc.crt"), "private_key_file": w.path("svc.key"),
				"ca_certificate_file": w.path("roots.pem"), "refresh_interval": "1s",
			},
		}},
		"server_listener_resource_name_template": serverListenerTemplate,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	w.bootstrap = w.path("bootstrap.json")
	if err := os.WriteFile(w.bootstrap, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *workload) path(name string) string { return filepath.Join(w.dir, name) }

// run starts bookstore-grpc with args as w's pod; out, when set, receives
// its output as it prints it. The process stops when the test ends, and
// its output is logged when the test failed.
func (w *workload) run(t *testing.T, out *callLog, args ...string) *stack.Proc {
	t.Helper()
	env := map[string]string{"GRPC_XDS_BOOTSTRAP": w.bootstrap, envSPIFFE: "true"}
	var tee io.Writer // a nil *callLog would be a non-nil writer
	if out != nil {
		tee = out
	}
	p, err := stack.Start(w.pod, appBin, args, env, tee)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", w.pod, tail(p.Output(), 40))
		}
	})
	return p
}

// serve starts w's bookstore server of version on addr, with flags more,
// and waits until it
// serves (it has its listener from the edge).
func (w *workload) serve(t *testing.T, addr, version string, flags ...string) *stack.Proc {
	t.Helper()
	p := w.run(t, nil, append([]string{"serve", "--addr", addr, "--version", version}, flags...)...)
	err := stack.Eventually(t.Context(), 60*time.Second, func() error {
		if strings.Contains(p.Output(), "serving "+addr) && !strings.Contains(p.Output(), "not-serving "+addr) {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("exited")
		default:
		}
		return fmt.Errorf("not serving yet")
	})
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", w.pod, addr, err, p.Output())
	}
	return p
}

// call is one call of bookstore-grpc call --json (its Call type).
type call struct {
	UnixNano int64  `json:"unix_nano"`
	Micros   int64  `json:"micros"`
	Method   string `json:"method"`
	Backend  string `json:"backend"`
	Caller   string `json:"caller"`
	// CallerSerial is the serial of the client certificate the server saw.
	CallerSerial string `json:"caller_serial"`
	Code         string `json:"code"`
	Error        string `json:"error"`
}

func (c call) at() time.Time { return time.Unix(0, c.UnixNano) }

// callLog collects the calls a client prints, one JSON line each; it is
// the process's output writer (other lines are ignored).
type callLog struct {
	mu      sync.Mutex
	partial []byte
	calls   []call
}

func (l *callLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		if len(line) > 0 && line[0] == '{' {
			var c call
			if err := json.Unmarshal(line, &c); err == nil {
				l.calls = append(l.calls, c)
			}
		}
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// len is the number of calls so far.
func (l *callLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// from returns the calls from the i-th on.
func (l *callLog) from(i int) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.calls) {
		return nil
	}
	return append([]call(nil), l.calls[i:]...)
}

// count tallies calls by "method backend code".
func count(cs []call) map[string]int {
	out := map[string]int{}
	for _, c := range cs {
		out[c.Method+" "+c.Backend+" "+c.Code]++
	}
	return out
}

// nacks sums the edge's osm_xds_nacks samples (0 while it has none).
func nacks(t *testing.T, m *stack.Mesh) float64 {
	t.Helper()
	text, err := apptest.Metrics(m.AdminAddr(stack.Edge))
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "osm_xds_nacks") {
			v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			if err == nil {
				n += v
			}
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// serverSerial is the serial (hex) of the certificate the server at addr
// presents in a new handshake with w's service certificate.
func serverSerial(t *testing.T, m *stack.Mesh, w *workload, addr string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(w.path("svc.crt"), w.path("svc.key"))
	if err != nil {
		t.Fatal(err)
	}
	d := &tls.Dialer{Config: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{pair},
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // only the serial is read; the chain was verified by the calls
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "handshake: " + err.Error()
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// direct calls method of bookstore.Books on addr without xDS, presenting
// w's service certificate (none when w is nil) and verifying the server's
// chain against the mesh's roots, and returns the call's status.
func direct(t *testing.T, m *stack.Mesh, w *workload, addr, method string) (codes.Code, string) {
	t.Helper()
	roots, err := caclient.RootPool(m.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the chain is verified below; the server is named by its SPIFFE id, not its address
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
	if w != nil {
		pair, err := tls.LoadX509KeyPair(w.path("svc.crt"), w.path("svc.key"))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = cc.Invoke(ctx, "/bookstore.Books/"+method, wrapperspb.String("a book"), &wrapperspb.StringValue{})
	st := status.Convert(err)
	return st.Code(), st.Message()
}
