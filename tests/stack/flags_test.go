package stack

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// noCluster stands in for a cluster where only the kubeconfig's path is
// read.
type noCluster struct{}

func (noCluster) KubeconfigPath() string           { return "/kubeconfig" }
func (noCluster) Clientset() *kubernetes.Clientset { return nil }

// TestServicesTakeTheStacksFlags: every flag and environment variable the
// stack sets for a service is one the service's --help lists, so that a
// renamed flag fails here rather than halfway through an end-to-end run.
func TestServicesTakeTheStacksFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every service")
	}
	n, err := StartNATS(t.Context(), NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	m := &Mesh{nats: n, running: map[Component]*instance{CertAuthority: {addr: "127.0.0.1:9443"}}, o: Options{
		Cluster: noCluster{}, Dir: t.TempDir(), Name: "osm", MeshName: "osm", Namespace: "osm-system",
		MeshConfig: "osm-mesh-config", BootstrapToken: "token", AckStatusInterval: time.Second,
	}}
	b := NewBuilder(t.TempDir())
	for _, c := range Components() {
		t.Run(string(c), func(t *testing.T) {
			bin, err := b.Build(t.Context(), string(c))
			if err != nil {
				t.Fatal(err)
			}
			help, err := exec.CommandContext(t.Context(), bin, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("--help: %v\n%s", err, help)
			}
			// A flag's line is "  --name type" and its environment twin
			// follows as "env NAME"; a deprecated alias is listed as
			// "  --old, env OLD: use --new".
			listed, deprecated := map[string]bool{}, map[string]string{}
			for _, line := range strings.Split(string(help), "\n") {
				var names []string
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(line, "  --") {
					names = append(names, strings.TrimRight(f[0], ","))
				}
				if _, env, ok := strings.Cut(line, " env "); ok {
					names = append(names, strings.TrimRight(strings.Fields(env)[0], ";:"))
				}
				_, use, isAlias := strings.Cut(line, ": use ")
				for _, n := range names {
					listed[n] = true
					if isAlias {
						deprecated[n] = use
					}
				}
			}
			var set []string
			for _, a := range m.args(c, "127.0.0.1:1", "127.0.0.1:2") {
				if strings.HasPrefix(a, "--") {
					set = append(set, a)
				}
			}
			for env := range m.env(c) {
				set = append(set, env)
			}
			for _, name := range set {
				switch {
				case !listed[name]:
					t.Errorf("the stack sets %s, which %s's --help does not list (flags.go spells it):\n%s", name, c, help)
				case deprecated[name] != "":
					t.Errorf("the stack sets %s, which %s deprecates: use %s (in flags.go)", name, c, deprecated[name])
				}
			}
		})
	}
}
