package chart

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
)

// kubeletStreams plays the part of the kubelet's API that the apiserver's
// pods/portforward reaches: an HTTPS listener on loopback, published in
// the Node's status (its one address, InternalIP 127.0.0.1, and
// daemonEndpoints.kubeletEndpoint.port) as a kubelet publishes its own,
// serving /portForward/<namespace>/<pod> over SPDY (the protocol
// portforward.k8s.io, as the kubelet's streaming server does). A stream
// to a pod's port goes to the loopback address of the process playing
// that port (target). The harness's apiserver has no kubelet CA, so it
// does not verify the listener's certificate, as a cluster without
// --kubelet-certificate-authority does not.
type kubeletStreams struct {
	t      *testing.T
	target func(namespace, pod string, port int32) (string, error)

	mu     sync.Mutex
	served []string // namespace/pod:port of each stream served
}

// serveKubeletStreams starts the listener and publishes it in node's
// status (the Node must exist). Cleanup stops it.
func serveKubeletStreams(t *testing.T, node string, target func(namespace, pod string, port int32) (string, error)) *kubeletStreams {
	t.Helper()
	k := &kubeletStreams{t: t, target: target}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, node)}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: k, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	nodes := cluster.Clientset().CoreV1().Nodes()
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
		_, err = nodes.UpdateStatus(t.Context(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("publish the kubelet stand-in's port in Node %s: %v", node, err)
	}
	return k
}

// streamsServed are the namespace/pod:port of the streams served so far.
func (k *kubeletStreams) streamsServed() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.served...)
}

// ServeHTTP serves /portForward/<namespace>/<pod>.
func (k *kubeletStreams) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) < 3 || parts[0] != "portForward" {
		http.Error(w, "the kubelet stand-in serves only /portForward/<namespace>/<pod>", http.StatusNotFound)
		return
	}
	ns, pod := parts[1], parts[2]
	if _, err := httpstream.Handshake(req, w, []string{"portforward.k8s.io"}); err != nil {
		return // Handshake answered
	}
	streams := make(chan httpstream.Stream, 1)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, req, func(s httpstream.Stream, _ <-chan struct{}) error {
		switch s.Headers().Get(corev1.StreamType) {
		case corev1.StreamTypeError, corev1.StreamTypeData:
		default:
			return fmt.Errorf("stream type %q", s.Headers().Get(corev1.StreamType))
		}
		streams <- s
		return nil
	})
	if conn == nil {
		return // UpgradeResponse answered
	}
	defer conn.Close()
	conn.SetIdleTimeout(5 * time.Minute)
	type pair struct{ data, errs httpstream.Stream }
	pairs := map[string]*pair{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case s := <-streams:
			id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
			p := pairs[id]
			if p == nil {
				p = &pair{}
				pairs[id] = p
			}
			if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeData {
				p.data = s
			} else {
				p.errs = s
			}
			if p.data != nil && p.errs != nil {
				delete(pairs, id)
				go k.forward(ns, pod, p.data, p.errs)
			}
		}
	}
}

// forward copies between the data stream and the port's process; an
// error goes to the error stream, which the client reports.
func (k *kubeletStreams) forward(ns, pod string, data, errs httpstream.Stream) {
	defer errs.Close()
	defer data.Close()
	port, err := strconv.ParseInt(data.Headers().Get(corev1.PortHeader), 10, 32)
	var c net.Conn
	if err == nil {
		var addr string
		if addr, err = k.target(ns, pod, int32(port)); err == nil {
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		}
	}
	if err != nil {
		fmt.Fprintf(errs, "error forwarding port %d to pod %s/%s: %v", port, ns, pod, err)
		return
	}
	defer c.Close()
	k.mu.Lock()
	k.served = append(k.served, fmt.Sprintf("%s/%s:%d", ns, pod, port))
	k.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(c, data); done <- struct{}{} }()
	go func() { _, _ = io.Copy(data, c); done <- struct{}{} }()
	<-done
}

// podPorts resolves a pod's container port to the process address that
// plays it, by the port's name: addrs[pod][name].
func podPorts(t *testing.T, addrs map[string]map[string]string) func(namespace, pod string, port int32) (string, error) {
	return func(ns, name string, port int32) (string, error) {
		p, err := cluster.Clientset().CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.ContainerPort != port {
					continue
				}
				if a := addrs[name][cp.Name]; a != "" {
					return a, nil
				}
				return "", fmt.Errorf("no process plays port %s (%d) of pod %s/%s", cp.Name, port, ns, name)
			}
		}
		return "", errors.New("no container of the pod declares the port")
	}
}

// selfSigned is a serving certificate for the stand-in's listener.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
