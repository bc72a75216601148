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
	helps := map[Component]string{}
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
			helps[c] = string(help)
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
	sameWords(t, helps)
}

// ownMeaning are the flags that two services name alike for a job of their
// own (the edge's ADS listener and the injector's webhook, the certificates
// each serves, the workload certificates each asks for), so their words
// differ.
var ownMeaning = map[string]bool{"--listen-addr": true, "--tls-cert-file": true, "--tls-key-file": true, "--cert-ttl": true}

// sameWords fails for a flag that two services' --help explain in other
// words; only the default may differ.
func sameWords(t *testing.T, helps map[Component]string) {
	t.Helper()
	words := map[string]map[string][]Component{} // flag -> explanation -> services
	for c, help := range helps {
		for flag, text := range flagTexts(help) {
			if ownMeaning[flag] {
				continue
			}
			if words[flag] == nil {
				words[flag] = map[string][]Component{}
			}
			words[flag][text] = append(words[flag][text], c)
		}
	}
	shared := 0
	for flag, texts := range words {
		n := 0
		for _, cs := range texts {
			n += len(cs)
		}
		if n > 1 {
			shared++
		}
		if len(texts) > 1 {
			t.Errorf("%s is explained in %d ways: %v", flag, len(texts), texts)
		}
	}
	if len(helps) == len(Components()) && shared < 10 {
		t.Errorf("only %d flags are shared by two services or more; the --help parsing is off", shared)
	}
}

// flagTexts maps each flag a --help lists to its explanation, without the
// default, which may differ between services.
func flagTexts(help string) map[string]string {
	out := map[string]string{}
	cur := ""
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "  --"):
			cur = strings.TrimRight(strings.Fields(line)[0], ",")
			out[cur] = strings.TrimSpace(strings.TrimPrefix(line[len("  "+cur):], ","))
		case cur != "" && strings.HasPrefix(line, "      "):
			text, _, _ := strings.Cut(strings.TrimSpace(line), "; default ")
			out[cur] += " | " + text
		default:
			cur = ""
		}
	}
	return out
}

// TestFlagTextsReadsTheHelpLayout: the parser behind sameWords reads each
// flag's words without its default, so two services' explanations compare.
func TestFlagTextsReadsTheHelpLayout(t *testing.T) {
	help := `Flags:
  --kube-api-qps int
      Kubernetes API requests per second this component may make
      env OSM_KUBE_API_QPS; default 5
  --kube-qps, env OSM_KUBE_QPS: use --kube-api-qps
`
	got := flagTexts(help)
	want := map[string]string{
		"--kube-api-qps": "int | Kubernetes API requests per second this component may make | env OSM_KUBE_API_QPS",
		"--kube-qps":     "env OSM_KUBE_QPS: use --kube-api-qps",
	}
	if len(got) != len(want) {
		t.Fatalf("flagTexts = %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("flagTexts[%s] = %q, want %q", k, got[k], v)
		}
	}
}
