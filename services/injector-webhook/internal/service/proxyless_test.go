package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

// createProxylessPod creates a proxyless gRPC pod of two containers in ns
// through the apiserver, retrying until the webhook configuration is in use.
func createProxylessPod(ctx context.Context, t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	pods := cluster.Clientset().CoreV1().Pods(ns)
	var pod *corev1.Pod
	apptest.Eventually(t, "an injected proxyless pod", 30*time.Second, func() error {
		p, err := pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "grpc-", Annotations: map[string]string{layout.NodeMetadataProxyless: layout.ProxylessGRPC}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "server", Image: "bookstore-grpc", Env: []corev1.EnvVar{{Name: "PORT", Value: "14001"}}},
				{Name: "client", Image: "bookbuyer-grpc"},
			}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if p.Labels[layout.LabelProxyUUID] == "" {
			_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{})
			return errors.New("created uninjected (the webhook configuration not yet in use?)")
		}
		pod = p
		return nil
	})
	return pod
}

// proxylessSecretOf waits until pod's Secret has its certificates.
func proxylessSecretOf(ctx context.Context, t *testing.T, pod *corev1.Pod) *corev1.Secret {
	t.Helper()
	var sec *corev1.Secret
	apptest.Eventually(t, "the proxyless pod's Secret with its certificates", 30*time.Second, func() error {
		var err error
		sec, err = cluster.Clientset().CoreV1().Secrets(pod.Namespace).Get(ctx, "envoy-bootstrap-"+pod.Labels[layout.LabelProxyUUID], metav1.GetOptions{})
		if err == nil && len(sec.Data[bootstrap.FileServiceCert]) == 0 {
			err = errors.New("no service certificate yet")
		}
		return err
	})
	return sec
}

func parseLeaf(t *testing.T, chain []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Fatalf("no PEM certificate in %q", chain)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// edgeCert is a serving certificate like the xds-edge's: a URI SAN only,
// from the CA's signing root.
func (ca *fakeCA) edgeCert(t *testing.T) tls.Certificate {
	t.Helper()
	key := newRoot(t, "edge") // a fresh key pair; only its key is used
	ca.mu.Lock()
	signer := ca.signer
	ca.mu.Unlock()
	uri, _ := url.Parse("spiffe://cluster.local/osm/xds-edge")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{uri},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, &key.key.PublicKey, signer.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key.key}
}

// adsRecorder is an xDS server that records the node and the client
// certificate's URI SAN of the first request of each stream, and answers
// nothing.
type adsRecorder struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	got chan string
}

func (a *adsRecorder) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	client := "no client certificate"
	if p, ok := peer.FromContext(st.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 && len(info.State.PeerCertificates[0].URIs) > 0 {
			client = info.State.PeerCertificates[0].URIs[0].String()
		}
	}
	select {
	case a.got <- nodeString(req.GetNode()) + " " + client:
	default:
	}
	<-st.Context().Done()
	return nil
}

func nodeString(n *corev3.Node) string {
	return fmt.Sprintf("%s %s %s=%s", n.GetId(), n.GetCluster(), layout.NodeMetadataProxyless,
		n.GetMetadata().GetFields()[layout.NodeMetadataProxyless].GetStringValue())
}

// TestProxylessPodGetsGRPCBootstrapAndCertificates is issue 17, section
// 2, through the real apiserver: a pod annotated openservicemesh.io/
// proxyless: grpc gets no sidecar and no init container, the Secret volume
// and GRPC_XDS_BOOTSTRAP in every container. Its Secret holds gRPC's
// bootstrap, which gRPC-Go's xDS client takes and uses to open an ADS
// stream over mTLS, with the Secret's xDS client certificate, to a server
// whose certificate is like the edge's (a URI SAN only), sending the
// proxyless node metadata; the service certificate carries the pod's
// SPIFFE id and chains to the CA; both certificates are renewed before
// two thirds of their lifetime.
func TestProxylessPodGetsGRPCBootstrapAndCertificates(t *testing.T) {
	const ttl = 4 * time.Second
	ca := startFakeCA(t)
	ns := cluster.Namespace(t, "proxyless", map[string]string{layout.LabelMonitoredBy: "osm"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ca.maxTTL.Store(int64(ttl))
	cp := cluster.Namespace(t, "osm-cp", nil)
	_, res, out := startInjector(ctx, t, ca, "osm-proxyless-test", apptest.FreeAddr(t), apptest.FreeAddr(t), "--namespace", cp)

	// The pod.
	pod := createProxylessPod(ctx, t, ns)
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 2 {
		t.Fatalf("init containers %d, containers %d, want 0 and the pod's 2", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	uuid := pod.Labels[layout.LabelProxyUUID]
	var vol *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.Name == inject.ProxylessVolume {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "envoy-bootstrap-"+uuid {
		t.Fatalf("volumes %+v", pod.Spec.Volumes)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == inject.SidecarName {
			t.Fatal("a proxyless pod got the sidecar")
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == inject.ProxylessVolume && m.MountPath == "/etc/osm/grpc")
		}
		if env[bootstrap.EnvGRPCBootstrap] != "/etc/osm/grpc/bootstrap.json" || !mounted {
			t.Fatalf("container %s: env %v, mounts %+v", c.Name, env, c.VolumeMounts)
		}
	}

	// The Secret, written once the pod exists.
	sec := proxylessSecretOf(ctx, t, pod)
	ca.mu.Lock()
	signer := ca.signer
	ca.mu.Unlock()
	roots := x509.NewCertPool()
	roots.AddCert(signer.cert)
	if !bytes.Equal(sec.Data[bootstrap.FileCA], signer.pem) {
		t.Fatalf("ca.crt is not the CA's bundle")
	}
	svc := parseLeaf(t, sec.Data[bootstrap.FileServiceCert])
	wantID := "spiffe://cluster.local/ns/" + ns + "/sa/default"
	if len(svc.URIs) != 1 || svc.URIs[0].String() != wantID {
		t.Fatalf("service certificate URIs %v, want %s", svc.URIs, wantID)
	}
	if _, err := svc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the service certificate does not chain to the CA: %v", err)
	}
	if _, err := tls.X509KeyPair(sec.Data[bootstrap.FileServiceCert], sec.Data[bootstrap.FileServiceKey]); err != nil {
		t.Fatalf("svc.key does not match svc.crt: %v", err)
	}
	xdsClient := parseLeaf(t, sec.Data[bootstrap.FileCert])
	wantXDS := "spiffe://cluster.local/osm/xds-client/ns/" + ns + "/sa/default"
	if len(xdsClient.URIs) != 1 || xdsClient.URIs[0].String() != wantXDS {
		t.Fatalf("xDS client certificate URIs %v, want %s", xdsClient.URIs, wantXDS)
	}

	// gRPC-Go's xDS client, given the bootstrap with the Secret's files
	// where the volume would be, opens a stream to the "edge".
	ads := &adsRecorder{got: make(chan string, 1)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.edgeCert(t)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, ads)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	dir := t.TempDir()
	for name, b := range sec.Data {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw := bytes.ReplaceAll(sec.Data[bootstrap.FileBootstrap], []byte(inject.ProxylessMount+"/"), []byte(dir+"/"))
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	server := b["xds_servers"].([]any)[0].(map[string]any)
	if uri := server["server_uri"]; uri != "osm-xds-edge.osm-system.svc.cluster.local:15128" {
		t.Fatalf("server_uri %v, want --xds-addr's default", uri)
	}
	server["server_uri"] = lis.Addr().String()
	if raw, err = json.Marshal(b); err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(raw)
	if err != nil {
		t.Fatalf("gRPC refuses the bootstrap: %v\n%s", err, sec.Data[bootstrap.FileBootstrap])
	}
	cc, err := grpc.NewClient("xds:///bookstore.bookstore:14001", grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()
	want := fmt.Sprintf("%s default.%s %s=grpc %s", uuid, ns, layout.NodeMetadataProxyless, wantXDS)
	select {
	case got := <-ads.got:
		if got != want {
			t.Fatalf("ADS stream from %q, want %q", got, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gRPC's xDS client opened no stream with the bootstrap's mTLS credentials")
	}
	cc.Close()

	// Renewal: both certificates replaced before two thirds of their
	// lifetime, the Secret's data rewritten in place (as the kubelet
	// would then swap the volume's files).
	cur := map[string]*x509.Certificate{bootstrap.FileCert: parseLeaf(t, sec.Data[bootstrap.FileCert]), bootstrap.FileServiceCert: parseLeaf(t, sec.Data[bootstrap.FileServiceCert])}
	renewed := map[string]int{}
	end := time.Now().Add(2 * ttl)
	for time.Now().Before(end) {
		time.Sleep(50 * time.Millisecond)
		s, err := cluster.Clientset().CoreV1().Secrets(ns).Get(ctx, sec.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for f, c := range cur {
			if time.Now().After(c.NotAfter) {
				t.Fatalf("%s expired unrenewed", f)
			}
			leaf := parseLeaf(t, s.Data[f])
			if leaf.SerialNumber.Cmp(c.SerialNumber) == 0 {
				continue
			}
			if at, life := time.Since(c.NotBefore), c.NotAfter.Sub(c.NotBefore); at >= life*2/3 {
				t.Fatalf("%s replaced %s into its %s lifetime, past two thirds", f, at, life)
			}
			cur[f] = leaf
			renewed[f]++
		}
	}
	if renewed[bootstrap.FileCert] < 2 || renewed[bootstrap.FileServiceCert] < 2 {
		t.Fatalf("renewals in two lifetimes: %v\n%s", renewed, out)
	}
	t.Logf("renewals of %s certificates in two lifetimes: %v", ttl, renewed)
	if id := cur[bootstrap.FileServiceCert].URIs[0].String(); id != wantID {
		t.Fatalf("renewed service certificate for %s", id)
	}
	cancel()
	apptest.Stopped(t, res, out)
}
