package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

const sdsType = resourcev3.SecretType

// startDebugEdge starts an edge with the debug API on a listener of its
// own and returns it with the API's address.
func (m *mesh) startDebugEdge(id string) (*replica, string) {
	m.t.Helper()
	tc, err := m.pki.ServerTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		m.t.Fatal(err)
	}
	tc.ClientCAs = nil // the bundle's roots only, as in production
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.t.Fatal(err)
	}
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e, err := New(Deps{
		Log: logrus.NewEntry(log), Conn: m.conn(bus.RoleEdge), Listener: ln, Debug: dln, EdgeID: id, TrustDomain: "cluster.local",
		GRPC:              xds.GRPCConfig{TLS: tc, KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second, MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Second},
		NATSLostThreshold: time.Minute, StopGrace: time.Second,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(m.t.Context())
	r := &replica{edge: e, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = e.Start(ctx)
	}()
	m.t.Cleanup(r.stop)
	m.waitReady(r)
	return r, dln.Addr().String()
}

// debugClient is an HTTPS client presenting a leaf of uri from ca (no
// certificate when uri is empty).
func debugClient(t *testing.T, ca *xdstest.CA, roots *xdstest.CA, uri string) *http.Client {
	t.Helper()
	tc, err := ca.ClientTLS(uri)
	if err != nil {
		t.Fatal(err)
	}
	tc.RootCAs = roots.Pool()
	tc.ServerName = ""
	tc.InsecureSkipVerify = true // the edge is named by its URI SAN; checked below
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots.Pool()})
		return err
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get fetches path and decodes a 200 answer into v; it returns the status
// and the raw body.
func get(t *testing.T, c *http.Client, addr, path string, v any) (int, string) {
	t.Helper()
	resp, err := c.Get("https://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// TestDebugAPI: the operator's certificate lists the connected proxies
// with their ACKed generation, lag and last NACK, gets a proxy's served
// resources (filtered by type) and its certificates, and no answer holds
// the private key served over SDS; a workload's or another role's
// certificate is refused with 403, and no certificate or one of another
// root fails the handshake.
func TestDebugAPI(t *testing.T) {
	m := seededMesh(t, "")
	e, addr := m.startDebugEdge("edge-1")

	// a's service certificate, served over SDS with its key.
	svcID := identity.New("cluster.local", "a", "a")
	_, chainPEM, keyPEM, err := m.pki.Leaf(svcID.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.edge.Server().SetCertificate(svcID, chainPEM, keyPEM, "serial-1"); err != nil {
		t.Fatal(err)
	}
	a := m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "uuid-a", Types: append(allTypes, sdsType)})
	for range 5 {
		xdstest.Next(t, a)
	}
	// b rejects every listener after the first generation's.
	b := m.proxy(e, spiffe("b"), xdstest.ProxyOptions{NodeID: "uuid-b", Delta: true, Types: allTypes, Reject: func(r xdstest.Response) string {
		if r.TypeURL == lds && r.Version != "1" {
			return "listener out-b: unknown filter"
		}
		return ""
	}})
	initial(t, b)

	op := debugClient(t, m.pki, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String())
	var list edgedebug.ProxyList
	xdstest.WaitFor(t, "both proxies listed and synced", func() bool {
		list = edgedebug.ProxyList{}
		if code, body := get(t, op, addr, edgedebug.PathProxies, &list); code != http.StatusOK {
			t.Fatalf("list: %d %s", code, body)
		}
		return len(list.Proxies) == 2 && list.Proxies[0].Synced && list.Proxies[1].Synced
	})
	pa, pb := list.Proxies[0], list.Proxies[1]
	if list.Edge != "edge-1" || list.Generation != "1" {
		t.Errorf("list edge %q generation %q; want edge-1, 1", list.Edge, list.Generation)
	}
	if pa.NodeID != "uuid-a" || pa.Identity != spiffe("a") || pa.Edge != "edge-1" || pa.Protocol != "sotw" ||
		pa.AckedGeneration != "1" || pa.Lag != 0 || len(pa.Types) != 5 || pa.LastNack != nil {
		t.Errorf("proxy a: %+v", pa)
	}
	if pb.NodeID != "uuid-b" || pb.Protocol != "delta" || pb.AckedGeneration != "1" || pb.Lag != 0 || len(pb.Types) != 4 {
		t.Errorf("proxy b: %+v", pb)
	}

	// An edit that reaches both: a ACKs it, b ACKs its clusters but keeps
	// rejecting its listener, so it lags by one.
	m.commit(m.res(xdstest.Cluster("shared", 2*time.Second), "shared"),
		m.res(xdstest.Listener("out-b", 15002), "out-b"))
	xdstest.WaitFor(t, "a synced at generation 2, b one behind with its NACK", func() bool {
		list = edgedebug.ProxyList{}
		get(t, op, addr, edgedebug.PathProxies, &list)
		return len(list.Proxies) == 2 && list.Proxies[0].AckedGeneration == "2" && list.Proxies[0].Synced && list.Proxies[1].LastNack != nil
	})
	pb = list.Proxies[1]
	if pb.Synced || pb.EdgeGeneration != "2" || pb.AckedGeneration != "1" || pb.Lag != 1 ||
		pb.LastNack.Type != "lds" || pb.LastNack.Message != "listener out-b: unknown filter" || pb.LastNack.Version != "2" {
		t.Errorf("proxy b after the edit: %+v (nack %+v)", pb, pb.LastNack)
	}

	// a's config: by type, and whole.
	var cfg edgedebug.Config
	if code, body := get(t, op, addr, edgedebug.ConfigPath("uuid-a")+"?type=cds", &cfg); code != http.StatusOK {
		t.Fatalf("config: %d %s", code, body)
	}
	var names []string
	for _, r := range cfg.Resources {
		names = append(names, r.Type+"/"+r.Name)
	}
	if got := strings.Join(names, " "); got != "cds/ca cds/shared" {
		t.Errorf("a's clusters: %s", got)
	}
	if !strings.Contains(string(cfg.Resources[1].Resource), `"connectTimeout":"2s"`) {
		t.Errorf("cluster shared as served: %s", cfg.Resources[1].Resource)
	}
	_, whole := get(t, op, addr, edgedebug.ConfigPath("uuid-a"), nil)
	for _, want := range []string{`"type":"lds"`, `"type":"rds"`, `"type":"eds"`, `"name":"service-cert"`, edgedebug.Redacted} {
		if !strings.Contains(whole, want) {
			t.Errorf("a's config dump lacks %s", want)
		}
	}
	// The certificates served to a.
	var certs edgedebug.Certs
	if code, body := get(t, op, addr, edgedebug.CertsPath("uuid-a"), &certs); code != http.StatusOK {
		t.Fatalf("certs: %d %s", code, body)
	}
	kinds := map[string]edgedebug.Secret{}
	for _, s := range certs.Secrets {
		kinds[s.Kind] = s
	}
	if c := kinds["certificate"].Certificates; len(c) != 1 || len(c[0].URISANs) != 1 || c[0].URISANs[0] != svcID.String() || c[0].NotAfter.Before(time.Now()) {
		t.Errorf("a's service certificate: %+v", kinds["certificate"])
	}
	if c := kinds["trusted-ca"].Certificates; len(c) != 1 || !c[0].IsCA || c[0].Subject != m.pki.Cert.Subject.String() {
		t.Errorf("a's trusted roots: %+v", kinds["trusted-ca"])
	}
	_, certsBody := get(t, op, addr, edgedebug.CertsPath("uuid-a"), nil)
	noKey(t, keyPEM, map[string]string{"config dump": whole, "certs": certsBody})

	// A proxy with a stream per type (go-control-plane's client): its
	// config joins them.
	m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "uuid-split", Types: []string{cds}})
	m.proxy(e, spiffe("a"), xdstest.ProxyOptions{NodeID: "uuid-split", Types: []string{lds}})
	xdstest.WaitFor(t, "both streams of uuid-split served", func() bool {
		cfg = edgedebug.Config{}
		get(t, op, addr, edgedebug.ConfigPath("uuid-split"), &cfg)
		var got []string
		for _, r := range cfg.Resources {
			got = append(got, r.Type+"/"+r.Name)
		}
		return strings.Join(got, " ") == "cds/ca cds/shared lds/out-a"
	})

	// Errors name the object.
	if code, body := get(t, op, addr, edgedebug.ConfigPath("no-such-node"), nil); code != http.StatusNotFound || !strings.Contains(body, "no-such-node") {
		t.Errorf("unknown node: %d %s", code, body)
	}
	if code, body := get(t, op, addr, edgedebug.ConfigPath("uuid-a")+"?type=xds", nil); code != http.StatusBadRequest || !strings.Contains(body, `type \"xds\"`) {
		t.Errorf("bad type: %d %s", code, body)
	}

	// Only the operator gets in.
	for _, uri := range []string{xdstest.ProxyURI(spiffe("a")), spiffe("a"), identity.ControlPlaneURI("cluster.local", identity.RoleXDSEdge).String(),
		identity.ControlPlaneURI("other.domain", identity.RoleOperator).String()} {
		code, body := get(t, debugClient(t, m.pki, m.pki, uri), addr, edgedebug.PathProxies, nil)
		if code != http.StatusForbidden || !strings.Contains(body, "operator") {
			t.Errorf("%s: %d %s; want 403 naming the operator role", uri, code, body)
		}
	}
	other, err := xdstest.NewCA("other-root")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*http.Client{
		"no client certificate":   debugClient(t, m.pki, m.pki, ""),
		"another root's operator": debugClient(t, other, m.pki, identity.ControlPlaneURI("cluster.local", identity.RoleOperator).String()),
	} {
		if resp, err := c.Get("https://" + addr + edgedebug.PathProxies); err == nil {
			resp.Body.Close()
			t.Errorf("%s: got %s; want the handshake refused", name, resp.Status)
		}
	}
}

// noKey fails when any body holds the private key, in PEM, in base64 (as
// protobuf JSON writes bytes) or as DER in base64.
func noKey(t *testing.T, keyPEM []byte, bodies map[string]string) {
	t.Helper()
	blk, _ := pem.Decode(keyPEM)
	forms := map[string]string{
		"PEM":           string(keyPEM),
		"base64 of PEM": base64.StdEncoding.EncodeToString(keyPEM),
		"base64 of DER": base64.StdEncoding.EncodeToString(blk.Bytes),
		"header":        "PRIVATE KEY",
	}
	for name, body := range bodies {
		for form, s := range forms {
			if strings.Contains(body, s) {
				t.Errorf("%s holds the private key (%s)", name, form)
			}
		}
	}
}
