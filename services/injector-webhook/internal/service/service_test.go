package service

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/tests/kube"
)

var cluster *kube.Cluster

// The MeshConfig CRD is installed: the MeshConfig watch lists it.
//
// The tests run with the environment of a proxyless gRPC pod's
// containers, bootstrap.EnvGRPCSPIFFE, which gRPC-Go reads once at
// start: the test binary runs itself again with it.
func TestMain(m *testing.M) {
	if os.Getenv(bootstrap.EnvGRPCSPIFFE) != "true" {
		self, err := os.Executable()
		if err == nil {
			err = syscall.Exec(self, os.Args, append(os.Environ(), bootstrap.EnvGRPCSPIFFE+"=true"))
		}
		fmt.Fprintf(os.Stderr, "run the tests with %s=true: %v\n", bootstrap.EnvGRPCSPIFFE, err)
		os.Exit(1)
	}
	os.Exit(kube.Main(m, &cluster, true))
}

// serviceArgs are the flags of an injector that serves a certificate from
// files, so that no cert-authority is needed until a pod is admitted. Its
// ValidatingWebhookConfiguration is unmanaged: the tests that want one name
// it.
func serviceArgs(t *testing.T, listen, admin string) []string {
	t.Helper()
	certFile, keyFile := keyPairFiles(t, t.TempDir(), time.Now().Add(time.Hour))
	return []string{"--kubeconfig", cluster.KubeconfigPath(), "--log-format", "text",
		"--listen-addr", listen, "--admin-addr", admin,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-file", certFile,
		"--ca-client-cert-file", certFile, "--ca-client-key-file", keyFile, "--ca-trust-file", certFile,
		"--webhook-config-name", "osm-service-test", "--webhook-url", "https://" + listen + admissionPath,
		"--validating-webhook-config-name", ""}
}

func TestServiceIsReadyWithItsWebhookConfigurationAndStopsOnCancel(t *testing.T) {
	webhooks := cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
	validating := cluster.Clientset().AdmissionregistrationV1().ValidatingWebhookConfigurations()
	t.Cleanup(func() {
		_ = webhooks.Delete(context.Background(), "osm-service-test", metav1.DeleteOptions{})
		_ = validating.Delete(context.Background(), "osm-service-test-validator", metav1.DeleteOptions{})
	})
	listen, admin := apptest.FreeAddr(t), apptest.FreeAddr(t)
	args := setArg(serviceArgs(t, listen, admin), "--validating-webhook-config-name", "osm-service-test-validator")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, out := apptest.Start(ctx, Spec(Options{}), args, nil)

	apptest.WaitReady(t, admin, 60*time.Second, res, out)
	// Ready means the webhook configuration is written.
	wh, err := webhooks.Get(ctx, "osm-service-test", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ready without its webhook configuration: %v", err)
	}
	if url := wh.Webhooks[0].ClientConfig.URL; url == nil || *url != "https://"+listen+admissionPath {
		t.Fatalf("webhook configuration URL %v", url)
	}
	// And the policy kinds' validating configuration, on the same
	// listener, ignoring failures by default.
	vwc, err := validating.Get(ctx, "osm-service-test-validator", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ready without its validating webhook configuration: %v", err)
	}
	for _, h := range vwc.Webhooks {
		if url := h.ClientConfig.URL; url == nil || *url != "https://"+listen+validatePath || *h.FailurePolicy != "Ignore" {
			t.Fatalf("validating webhook %s: URL %v, failure policy %s", h.Name, url, *h.FailurePolicy)
		}
	}

	// A second injector on the same --listen-addr ends with an error that
	// names the part and the flag.
	second := serviceArgs(t, listen, apptest.FreeAddr(t))
	for i := range second {
		if second[i] == "--webhook-config-name" {
			second[i+1] = ""
		}
	}
	secondRes, secondOut := apptest.Start(t.Context(), Spec(Options{}), second, nil)
	select {
	case err := <-secondRes:
		if err == nil || !strings.Contains(err.Error(), "admission server") || !strings.Contains(err.Error(), "--listen-addr") {
			t.Fatalf("second injector: %v, want an error naming the admission server and --listen-addr\n%s", err, secondOut)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the second injector did not stop\n%s", secondOut)
	}

	cancel()
	apptest.Stopped(t, res, out)
	if _, err := webhooks.Get(context.Background(), "osm-service-test", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Fatal("the webhook configuration went with the injector; it must stay for the other replicas")
	}
}
