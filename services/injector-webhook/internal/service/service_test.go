package service

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/logging"
	"github.com/openservicemesh/osm/tests/kube"
)

var cluster *kube.Cluster

// The MeshConfig CRD is installed: the MeshConfig watch lists it.
func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, true)) }

// freeAddr is a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runService runs the service in-process with args and returns its result
// channel and its log.
func runService(ctx context.Context, args []string) (<-chan error, *logging.Buffer) {
	out := &logging.Buffer{}
	res := make(chan error, 1)
	go func() { res <- app.Run(ctx, Spec(Options{}), args, func(string) string { return "" }, out) }()
	return res, out
}

// serviceArgs are the flags of an injector that serves a certificate from
// files, so that no cert-authority is needed until a pod is admitted.
func serviceArgs(t *testing.T, listen, admin string) []string {
	t.Helper()
	certFile, keyFile := keyPairFiles(t, t.TempDir(), time.Now().Add(time.Hour))
	return []string{"--kubeconfig", cluster.KubeconfigPath(), "--log-format", "text",
		"--listen-addr", listen, "--admin-addr", admin,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-file", certFile,
		"--ca-client-cert-file", certFile, "--ca-client-key-file", keyFile, "--ca-trust-file", certFile,
		"--webhook-config-name", "osm-service-test", "--webhook-url", "https://" + listen + admissionPath}
}

func TestServiceIsReadyWithItsWebhookConfigurationAndStopsOnCancel(t *testing.T) {
	webhooks := cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
	t.Cleanup(func() { _ = webhooks.Delete(context.Background(), "osm-service-test", metav1.DeleteOptions{}) })
	listen, admin := freeAddr(t), freeAddr(t)
	args := serviceArgs(t, listen, admin)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, out := runService(ctx, args)

	var readyz string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		select {
		case err := <-res:
			t.Fatalf("the service stopped: %v\n%s", err, out)
		default:
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b := make([]byte, 1024)
		n, _ := resp.Body.Read(b)
		readyz = string(b[:n])
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("not ready: %s\n%s", readyz, out)
	}
	// Ready means the webhook configuration is written.
	wh, err := webhooks.Get(ctx, "osm-service-test", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ready without its webhook configuration: %v", err)
	}
	if url := wh.Webhooks[0].ClientConfig.URL; url == nil || *url != "https://"+listen+admissionPath {
		t.Fatalf("webhook configuration URL %v", url)
	}

	// A second injector on the same --listen-addr ends with an error that
	// names the part and the flag.
	second := serviceArgs(t, listen, freeAddr(t))
	for i := range second {
		if second[i] == "--webhook-config-name" {
			second[i+1] = ""
		}
	}
	secondRes, secondOut := runService(t.Context(), second)
	select {
	case err := <-secondRes:
		if err == nil || !strings.Contains(err.Error(), "admission server") || !strings.Contains(err.Error(), "--listen-addr") {
			t.Fatalf("second injector: %v, want an error naming the admission server and --listen-addr\n%s", err, secondOut)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the second injector did not stop\n%s", secondOut)
	}

	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("stopped with %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("did not stop\n%s", out)
	}
	if _, err := webhooks.Get(context.Background(), "osm-service-test", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Fatal("the webhook configuration went with the injector; it must stay for the other replicas")
	}
}
