package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// injectedPod is a proxyless pod as the injector patches it: the Secret
// volume at /etc/osm/grpc and the environment naming its bootstrap.
func injectedPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bookbuyer", Name: "bookbuyer-0"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app",
				Env: []corev1.EnvVar{
					{Name: EnvGRPCBootstrap, Value: "/etc/osm/grpc/bootstrap.json"},
					{Name: "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE", Value: "true"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "osm-grpc-bootstrap", MountPath: "/etc/osm/grpc", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "osm-grpc-bootstrap", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "envoy-bootstrap-1234"}}}},
		},
	}
}

const testBootstrap = `{"xds_servers":[{"server_uri":"edge:15128","channel_creds":[{"type":"tls","config":{
"certificate_file":"/etc/osm/grpc/tls.crt","ca_certificate_file":"/etc/osm/grpc/ca.crt"}}]}],
"certificate_providers":{"osm-certs":{"config":{"certificate_file":"/etc/osm/grpc/svc.crt","note":"/etc/osm/grpcx/not-ours"}}}}`

// TestMountProxylessFollowsTheSecret: the stand-in waits for the Secret,
// lays it out as the kubelet does (..data swapped to a new directory, a
// symlink per key), maps the mount path into its directory in the
// environment and the bootstrap, writes again when the Secret changes
// (a removed key loses its file, the old directory goes) and stops.
func TestMountProxylessFollowsTheSecret(t *testing.T) {
	ctx := t.Context()
	client := fake.NewClientset()
	dir := filepath.Join(t.TempDir(), "vol")
	secrets := client.CoreV1().Secrets("bookbuyer")

	// The injector writes the Secret after admission: the mount waits.
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "envoy-bootstrap-1234", Namespace: "bookbuyer"},
			Data: map[string][]byte{"bootstrap.json": []byte(testBootstrap), "tls.crt": []byte("cert 1"), "ca.crt": []byte("roots 1"), "svc.crt": []byte("svc 1")}},
			metav1.CreateOptions{})
		if err != nil {
			t.Error(err)
		}
	}()
	// The context bounds the wait only: the sync goes on after it ends.
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	p, err := MountProxyless(wait, client, injectedPod(), dir)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })

	if got, want := p.Env[EnvGRPCBootstrap], filepath.Join(dir, "bootstrap.json"); got != want {
		t.Errorf("%s = %q, want %q", EnvGRPCBootstrap, got, want)
	}
	if got := p.Env["GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE"]; got != "true" {
		t.Errorf("GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE = %q, want the pod's true", got)
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(p.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("tls.crt"); got != "cert 1" {
		t.Errorf("tls.crt = %q", got)
	}
	var boot struct {
		XDSServers []struct {
			ChannelCreds []struct {
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Providers map[string]struct {
			Config map[string]string `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal([]byte(read("bootstrap.json")), &boot); err != nil {
		t.Fatal(err)
	}
	creds := boot.XDSServers[0].ChannelCreds[0].Config
	prov := boot.Providers["osm-certs"].Config
	for got, want := range map[string]string{
		creds["certificate_file"]:    filepath.Join(dir, "tls.crt"),
		creds["ca_certificate_file"]: filepath.Join(dir, "ca.crt"),
		prov["certificate_file"]:     filepath.Join(dir, "svc.crt"),
		prov["note"]:                 "/etc/osm/grpcx/not-ours", // not under the mount path
	} {
		if got != want {
			t.Errorf("bootstrap path %q, want %q", got, want)
		}
	}
	// The kubelet's layout: the key is a symlink into ..data, itself a
	// symlink to a hidden timestamped directory.
	link, err := os.Readlink(filepath.Join(dir, "tls.crt"))
	if err != nil || link != filepath.Join("..data", "tls.crt") {
		t.Errorf("tls.crt links to %q (%v), want ..data/tls.crt", link, err)
	}
	first, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(first, "..") {
		t.Fatalf("..data links to %q (%v), want a hidden directory", first, err)
	}
	if fi, err := os.Stat(p.Path("tls.crt")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("tls.crt mode: %v %v, want the default 0644", fi.Mode(), err)
	}
	if p.Syncs() != 1 {
		t.Errorf("%d writes after the mount, want 1", p.Syncs())
	}

	// The injector renews: new data, svc.crt gone.
	s, err := secrets.Get(ctx, "envoy-bootstrap-1234", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data["tls.crt"] = []byte("cert 2")
	delete(s.Data, "svc.crt")
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Eventually(ctx, 10*time.Second, func() error {
		if n := p.Syncs(); n < 2 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("the update was never written: %v", err)
	}
	if got := read("tls.crt"); got != "cert 2" {
		t.Errorf("tls.crt = %q after the update, want the Secret's new value", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "svc.crt")); !os.IsNotExist(err) {
		t.Errorf("svc.crt, removed from the Secret, is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("the first write's directory %s is still there: %v", first, err)
	}
	if got := read("ca.crt"); got != "roots 1" {
		t.Errorf("ca.crt = %q after the update, want it kept", got)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// TestMountProxylessRefusesAPodWithoutTheBootstrap: a pod the injector
// did not patch, or whose bootstrap is on no Secret volume, is an error
// naming the pod and what is missing.
func TestMountProxylessRefusesAPodWithoutTheBootstrap(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*corev1.Pod)
		want string
	}{
		"no env":        {func(p *corev1.Pod) { p.Spec.Containers[0].Env = nil }, "no GRPC_XDS_BOOTSTRAP"},
		"no mount":      {func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts = nil }, "is on no volume mount"},
		"not a Secret":  {func(p *corev1.Pod) { p.Spec.Volumes[0].Secret = nil }, "not a Secret volume"},
		"no containers": {func(p *corev1.Pod) { p.Spec.Containers = nil }, "has no container"},
	} {
		t.Run(name, func(t *testing.T) {
			pod := injectedPod()
			c.edit(pod)
			_, err := MountProxyless(t.Context(), fake.NewClientset(), pod, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bookbuyer/bookbuyer-0") {
				t.Errorf("error %v, want one naming the pod and %q", err, c.want)
			}
		})
	}
}
