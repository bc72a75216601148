package proxyless

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
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
	corev1 "k8s.io/api/core/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/tests/stack"
)

// workload is a proxyless pod admitted by the injector, its identity
// and its bootstrap Secret volume as the kubelet stand-in
// (stack.MountProxyless) keeps it: gRPC's xDS bootstrap (the edge's
// Service as xDS server, the node's proxyless metadata, the file_watcher
// provider), the xDS client certificate tls.crt, the service certificate
// svc.crt, the roots ca.crt and spiffe-bundle.json.
type workload struct {
	id  identity.ID
	pod *corev1.Pod
	vol *stack.ProxylessPod
}

// mount mounts pod's bootstrap Secret volume, waiting for the injector's
// writer to create the Secret; the sync stops when the test ends.
func mount(t *testing.T, pod *corev1.Pod) *workload {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	vol, err := stack.MountProxyless(ctx, cluster.Clientset(), pod, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vol.Stop(); err != nil {
			t.Error(err)
		}
	})
	return &workload{id: identity.New(stack.TrustDomain, pod.Namespace, pod.Spec.ServiceAccountName), pod: pod, vol: vol}
}

// path is the file of the Secret's key name in w's volume.
func (w *workload) path(name string) string { return w.vol.Path(name) }

// run starts bookstore-grpc with args as w's pod; out, when set, receives
// its output as it prints it. The process stops when the test ends, and
// its output is logged when the test failed.
func (w *workload) run(t *testing.T, out *callLog, args ...string) *stack.Proc {
	t.Helper()
	var tee io.Writer // a nil *callLog would be a non-nil writer
	if out != nil {
		tee = out
	}
	p, err := stack.Start(w.pod.Name, appBin, args, w.vol.Env, tee)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", w.pod.Name, tail(p.Output(), 40))
		}
	})
	return p
}

// serve starts w's bookstore server of version on addr, with flags more,
// and waits until it serves (it has its listener from the edge): its last
// serving-mode line says "serving", a "not-serving" one before it (the
// edge refusing it before the pod was seen) notwithstanding.
func (w *workload) serve(t *testing.T, addr, version string, flags ...string) *stack.Proc {
	t.Helper()
	p := w.run(t, nil, append([]string{"serve", "--addr", addr, "--version", version}, flags...)...)
	err := stack.Eventually(t.Context(), 60*time.Second, func() error {
		if servingNow(p.Output(), addr) {
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
		t.Fatalf("%s on %s: %v\n%s", w.pod.Name, addr, err, p.Output())
	}
	return p
}

// servingNow reports whether the last serving-mode line of a server's
// output for addr is "serving <addr>".
func servingNow(out, addr string) bool {
	last := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "serving "+addr) || strings.HasPrefix(line, "not-serving "+addr) {
			last = line
		}
	}
	return strings.HasPrefix(last, "serving "+addr)
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
	// Attempt is the attempt the server answered (1 unless retried).
	Attempt int    `json:"attempt"`
	Code    string `json:"code"`
	Error   string `json:"error"`
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
