package command

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
)

const (
	typeCDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeLDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeSDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// TestProxyCommands runs osm proxy list and get config|certs against the
// mesh's services as processes (tests/stack) on the harness cluster, with
// real xDS clients (libs/xdstest, go-control-plane's types) holding
// CA-issued workload certificates: through a context file, as against the
// dev stack. The operator certificate comes from the real CA for a real
// TokenRequest of osm-operator; a user without the RBAC is told which
// Role to bind; a workload certificate is refused by the edge; no output
// holds a private key.
func TestProxyCommands(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()
	// Two meshed pods (the injector's label names their proxy), one that
	// is not, and one whose proxy never connects.
	tm := startTestMesh(t, testMeshOptions{name: "proxytest", pods: []testPod{
		{"buyer-1", "bookbuyer", "uuid-buyer-1", "10.244.9.10"},
		{"store-1", "bookstore", "uuid-store-1", "10.244.9.11"},
		{"plain-1", "bookstore", "", "10.244.9.12"},
		{"idle-1", "bookstore", "uuid-idle-1", "10.244.9.13"},
	}, before: func(tm *testMesh) {
		// A Service bookstore, which permissive mode lets bookbuyer reach.
		_, err := cs.CoreV1().Services(tm.appNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "bookstore"}, Ports: []corev1.ServicePort{{
				Name: "http", Port: 14001, TargetPort: intstr.FromInt32(14001), AppProtocol: ptrTo("http")}}},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}})
	appNS, dir, debugAddr, m := tm.appNS, tm.dir, tm.edge.Addr, tm.Mesh
	t.Logf("mesh ready after %s", time.Since(start).Round(time.Millisecond))

	// The proxies: bookbuyer over state of the world, bookstore over delta.
	proxies := map[string]*xdstest.Proxy{}
	var workloadCert tls.Certificate
	proxies["bookbuyer"], _ = tm.proxy(t, "bookbuyer", "uuid-buyer-1", false)
	proxies["bookstore"], workloadCert = tm.proxy(t, "bookstore", "uuid-store-1", true)

	run := func(args ...string) (string, error) { return tm.osm(t, args...) }
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("osm %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	var outputs []string

	// list: both proxies, on the edge, synced at the edge's generation.
	var rows []proxyRow
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := must("proxy", "list", "-o", "json")
		rows = nil
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("proxy list -o json: %v\n%s", err, out)
		}
		if len(rows) == 2 && rows[0].Synced && rows[1].Synced && rows[0].Pod != "" {
			outputs = append(outputs, out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy list: want both proxies synced within 30s:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, want := range []struct{ pod, identity, protocol string }{
		{appNS + "/buyer-1", "spiffe://cluster.local/ns/" + appNS + "/sa/bookbuyer", "sotw"},
		{appNS + "/store-1", "spiffe://cluster.local/ns/" + appNS + "/sa/bookstore", "delta"},
	} {
		r := rows[i]
		if r.Pod != want.pod || r.Identity != want.identity || r.Protocol != want.protocol || r.Edge != "proxytest-edge-0" ||
			r.AckedGeneration == "" || r.AckedGeneration != r.EdgeGeneration || r.Lag != 0 || r.LastNack != nil || len(r.Types) != 5 {
			t.Errorf("proxy %d: %+v; want %+v, synced with no lag", i, r, want)
		}
	}
	table := must("proxy", "list")
	outputs = append(outputs, table)
	for _, want := range []string{"POD", "LAST NACK", appNS + "/buyer-1", appNS + "/bookbuyer", "proxytest-edge-0", "yes"} {
		if !strings.Contains(table, want) {
			t.Errorf("proxy list lacks %q:\n%s", want, table)
		}
	}
	outputs = append(outputs, must("proxy", "list", "-o", "yaml"))

	// get config: by type, and whole with the service certificate's key
	// redacted.
	var cfg edgedebug.Config
	out := must("proxy", "get", "config", appNS+"/buyer-1", "--type", "cds", "-o", "json")
	outputs = append(outputs, out)
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.NodeID != "uuid-buyer-1" || len(cfg.Resources) == 0 {
		t.Fatalf("get config --type cds: %s", out)
	}
	for _, r := range cfg.Resources {
		if r.Type != "cds" || !strings.Contains(string(r.Resource), "envoy.config.cluster.v3.Cluster") {
			t.Errorf("get config --type cds: resource %s %s: %s", r.Type, r.Name, r.Resource)
		}
	}
	whole := must("proxy", "get", "config", "buyer-1", "-o", "json") // a name no other meshed pod has
	outputs = append(outputs, whole, must("proxy", "get", "config", appNS+"/store-1"))
	for _, want := range []string{`"type": "lds"`, `"type": "sds"`, layout.SecretServiceCert, edgedebug.Redacted} {
		if !strings.Contains(whole, want) {
			t.Errorf("get config lacks %s", want)
		}
	}
	// get certs: bookbuyer's service certificate, from the mesh's CA.
	var certs edgedebug.Certs
	out = must("proxy", "get", "certs", appNS+"/buyer-1", "-o", "json")
	outputs = append(outputs, out, must("proxy", "get", "certs", appNS+"/store-1"))
	if err := json.Unmarshal([]byte(out), &certs); err != nil {
		t.Fatal(err)
	}
	var leafSAN string
	var rootsSeen int
	for _, s := range certs.Secrets {
		switch s.Kind {
		case "certificate":
			if len(s.Certificates) > 0 && len(s.Certificates[0].URISANs) == 1 {
				leafSAN = s.Certificates[0].URISANs[0]
			}
		case "trusted-ca":
			rootsSeen = len(s.Certificates)
		}
	}
	if leafSAN != "spiffe://cluster.local/ns/"+appNS+"/sa/bookbuyer" || rootsSeen != len(m.Bundle().GetRoots()) {
		t.Errorf("get certs: service certificate SAN %q, %d roots (want bookbuyer's, %d):\n%s", leafSAN, rootsSeen, len(m.Bundle().GetRoots()), out)
	}

	// No output holds the private key the edge serves bookbuyer over SDS.
	key := servedKey(t, proxies["bookbuyer"])
	blk, _ := pem.Decode(key)
	for _, o := range outputs {
		for form, s := range map[string]string{"PEM": string(key), "base64 of PEM": base64.StdEncoding.EncodeToString(key),
			"base64 of DER": base64.StdEncoding.EncodeToString(blk.Bytes), "a PEM key header": "PRIVATE KEY"} {
			if strings.Contains(o, s) {
				t.Errorf("an output holds the private key (%s):\n%.400s", form, o)
			}
		}
	}

	// Errors name the object and say what to do.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"proxy", "get", "config", appNS + "/plain-1"}, []string{"pod " + appNS + "/plain-1 is not meshed", "osm namespace add " + appNS}},
		{[]string{"proxy", "get", "certs", appNS + "/nope"}, []string{"pod " + appNS + "/nope not found"}},
		{[]string{"proxy", "get", "config", appNS + "/idle-1"}, []string{"uuid-idle-1", "none of the 1 edges (proxytest-edge-0)"}},
		{[]string{"proxy", "get", "config", "nope"}, []string{"no meshed pod named nope"}},
		{[]string{"proxy", "get", "config", appNS + "/buyer-1", "--type", "xds"}, []string{"--type", `"xds"`, "cds, eds, lds, rds, sds"}},
	} {
		_, err := run(c.args...)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("osm %s: %v; want an error with %q", strings.Join(c.args, " "), err, w)
			}
		}
	}

	// A user who may not create the operator's token is told the Role to
	// bind.
	nobody := userKubeconfig(t, dir, "default", "proxytest-nobody")
	_, err := run("--kubeconfig", nobody, "proxy", "list")
	if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "--role=osm-operator-token") {
		t.Errorf("proxy list as a user without the RBAC: %v; want permission denied naming the Role", err)
	}

	// A workload certificate is refused by the edge's debug API.
	pool, err := caclient.RootPool(m.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{workloadCert}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool})
			return err
		}}}}
	resp, err := hc.Get("https://" + debugAddr + edgedebug.PathProxies)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("the debug API with a workload certificate: %s; want 403", resp.Status)
	}
	t.Logf("done after %s", time.Since(start).Round(time.Millisecond))
}

func ptrTo[T any](v T) *T { return &v }

// unstructuredMeshConfig is a permissive MeshConfig.
func unstructuredMeshConfig(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": true}},
	}}
}

// servedKey is the private key the proxy holds in its service-cert secret.
func servedKey(t *testing.T, p *xdstest.Proxy) []byte {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if a := p.Held(typeSDS)[layout.SecretServiceCert]; a != nil {
			sec := &tlsv3.Secret{}
			if err := a.UnmarshalTo(sec); err != nil {
				t.Fatal(err)
			}
			if k := sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes(); len(k) > 0 {
				return k
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy holds no service certificate key")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// userKubeconfig writes a kubeconfig of a new ServiceAccount ns/name, which
// has no RBAC at all, and returns its path.
func userKubeconfig(t *testing.T, dir, ns, name string) string {
	t.Helper()
	ctx := t.Context()
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := cluster.RESTConfig()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	path := filepath.Join(dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestProxyTables: the table form of each proxy command, golden, from
// fixed answers.
func TestProxyTables(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	rows := []proxyRow{
		{Pod: "bookbuyer/bookbuyer-5f7b", Proxy: edgedebug.Proxy{NodeID: "1b9c", Identity: "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer", Edge: "osm-xds-edge-7c9d-x2x4z",
			AckedGeneration: "42", EdgeGeneration: "42", Synced: true}},
		{Pod: "bookstore/bookstore-v1-7d9c", Proxy: edgedebug.Proxy{NodeID: "77aa", Identity: "spiffe://cluster.local/ns/bookstore/sa/bookstore", Edge: "osm-xds-edge-7c9d-k8p2q",
			AckedGeneration: "40", EdgeGeneration: "42", Lag: 2, LastNack: &edgedebug.Nack{Type: "lds", Version: "41", Time: at,
				Message: "Error adding/updating listener(s) inbound-listener: unknown filter envoy.filters.http.wasm in the chain"}}},
		{Proxy: edgedebug.Proxy{NodeID: "c0ffee", Identity: "spiffe://cluster.local/ns/bookthief/sa/bookthief", Edge: "osm-xds-edge-7c9d-k8p2q", AckedGeneration: "0", EdgeGeneration: "42", Lag: 42}},
	}
	var b bytes.Buffer
	if err := proxyTable(rows).print(&b, "table"); err != nil {
		t.Fatal(err)
	}
	golden(t, "proxy-list.txt", b.String())

	b.Reset()
	cfg := &edgedebug.Config{Resources: []edgedebug.Resource{
		{Type: "cds", Name: "bookstore/bookstore|14001", Version: "42.9f1c2ab0e1d2c3f4"},
		{Type: "eds", Name: "bookstore/bookstore|14001", Version: "41.0a1b2c3d4e5f6071"},
		{Type: "sds", Name: "service-cert", Version: "3f2a"},
	}}
	if err := configTable(cfg).print(&b, "table"); err != nil {
		t.Fatal(err)
	}
	golden(t, "proxy-get-config.txt", b.String())

	b.Reset()
	certs := &edgedebug.Certs{Secrets: []edgedebug.Secret{
		{Name: "service-cert", Kind: "certificate", Certificates: []edgedebug.Certificate{{Subject: "O=osm", Serial: "5a1f", URISANs: []string{"spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"}, NotAfter: at.Add(24 * time.Hour)}}},
		{Name: "root-cert", Kind: "trusted-ca", Certificates: []edgedebug.Certificate{{Subject: "CN=osm-ca,O=osm", Serial: "1", IsCA: true, NotAfter: at.Add(10 * 365 * 24 * time.Hour)}}},
	}}
	if err := certsTable(certs).print(&b, "table"); err != nil {
		t.Fatal(err)
	}
	golden(t, "proxy-get-certs.txt", b.String())
}
