package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// set returns the default values with the dotted path set to v, like
// `--set path=v`.
func set(t testing.TB, vals map[string]any, path string, v any) map[string]any {
	t.Helper()
	m := vals
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
	return vals
}

// TestBadValuesNameTheValue: each bad value fails the install with a
// schema error that names it.
func TestBadValuesNameTheValue(t *testing.T) {
	cases := []struct {
		name  string
		file  string
		path  string
		value any
		want  string
	}{
		{"negative replicas", "", "xdsEdge.replicas", -1, "/xdsEdge/replicas"},
		{"negative compiler replicas", "", "policyCompiler.replicas", -2, "/policyCompiler/replicas"},
		{"unknown CA provider", "", "certAuthority.provider", "acme", "/certAuthority/provider"},
		{"vault without address", "values-vault.yaml", "certAuthority.vault.address", "", "/certAuthority/vault/address"},
		{"vault without the CA's roots", "values-vault.yaml", "global.caRoots.pem", "", "/global/caRoots/pem"},
		{"two NATS servers", "", "global.nats.replicas", 2, "/global/nats/replicas"},
		{"misspelt value", "", "xdsEdge.replica", 3, "replica"},
		{"bad duration", "", "xdsEdge.limits.maxConnectionAge", "30 minutes", "/xdsEdge/limits/maxConnectionAge"},
		{"bad digest", "", "injector.image.digest", "latest", "/injector/image/digest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vals := set(t, valuesFile(t, c.file), c.path, c.value)
			_, err := render(t, vals)
			if err == nil {
				t.Fatalf("%s=%v rendered; want a schema error", c.path, c.value)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s=%v: error %q does not name %q", c.path, c.value, err, c.want)
			}
			if testing.Verbose() {
				t.Logf("%s=%v: %v", c.path, c.value, err)
			}
		})
	}
}

// TestRootRotationValues: the builtin CA's trusted roots reach its flag
// and its Role, which may read those Secrets by name and no other.
func TestRootRotationValues(t *testing.T) {
	vals := set(t, valuesFile(t, ""), "certAuthority.trustedRootSecrets", []any{"osm-ca-root-2"})
	r, err := render(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	objs := byKey(t, objects(t, r.Manifest))
	ca := container(t, objs["Deployment/osm-system/osm-cert-authority"])
	if !slices.Contains(ca.Args, "--trusted-root-secrets=osm-ca-root-2") {
		t.Errorf("cert-authority args %v lack the trusted root", ca.Args)
	}
	role := objs["Role/osm-system/osm-cert-authority"]
	rules, _ := role.Body["rules"].([]any)
	get, _ := rules[0].(map[string]any)
	names := fmt.Sprint(get["resourceNames"])
	if fmt.Sprint(get["verbs"]) != "[get]" || names != "[osm-ca-root osm-ca-root-2]" {
		t.Errorf("the CA's first rule: verbs %v on %s, want get on [osm-ca-root osm-ca-root-2]", get["verbs"], names)
	}
}

// TestOneTagChangesOneComponent: changing one component's image tag
// changes that component's objects and nothing else, for every component.
func TestOneTagChangesOneComponent(t *testing.T) {
	base, err := render(t, valuesFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	before := byKey(t, objects(t, golden(t, base.Manifest)))
	for alias, component := range map[string]string{
		"smiWatcher": "smi-watcher", "policyCompiler": "policy-compiler", "certAuthority": "cert-authority",
		"injector": "injector-webhook", "xdsEdge": "xds-edge", "nats": "nats",
	} {
		t.Run(alias, func(t *testing.T) {
			r, err := render(t, set(t, valuesFile(t, ""), alias+".image.tag", "v9.9.9-canary"))
			if err != nil {
				t.Fatal(err)
			}
			after := byKey(t, objects(t, golden(t, r.Manifest)))
			changed := changedObjects(t, before, after)
			workload := false
			for _, key := range changed {
				o := after[key]
				if got := componentOf(o); got != component {
					t.Errorf("%s changed though it belongs to %q", key, got)
				}
				if k := o.Body["kind"]; k == "Deployment" || k == "StatefulSet" {
					workload = true
					if !strings.Contains(o.YAML, ":v9.9.9-canary") {
						t.Errorf("%s changed but does not run the new tag", key)
					}
				}
			}
			if !workload {
				t.Errorf("no workload of %s changed; changed: %v", component, changed)
			}
		})
	}
}

// changedObjects lists the keys added, removed or changed between two renders.
func changedObjects(t testing.TB, before, after map[string]object) []string {
	t.Helper()
	var out []string
	for k, a := range after {
		if b, ok := before[k]; !ok || b.YAML != a.YAML {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// componentOf is the app.kubernetes.io/component label of o.
func componentOf(o object) string {
	md, _ := o.Body["metadata"].(map[string]any)
	labels, _ := md["labels"].(map[string]any)
	c, _ := labels["app.kubernetes.io/component"].(string)
	return c
}

// TestOperatorAccessBindsTheListedSubjects: without operator.users and
// operator.groups the Role osm-operator-token is bound to no one (cluster
// admins need no binding); with them, one RoleBinding names each.
func TestOperatorAccessBindsTheListedSubjects(t *testing.T) {
	binding := func(vals map[string]any) *object {
		t.Helper()
		r, err := render(t, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objects(t, r.Manifest) {
			if o.Key == "RoleBinding/osm-system/osm-operator-token" {
				return &o
			}
		}
		return nil
	}
	if b := binding(valuesFile(t, "")); b != nil {
		t.Fatalf("a RoleBinding of osm-operator-token without operator.users or groups:\n%s", b.YAML)
	}
	vals := set(t, set(t, valuesFile(t, ""), "operator.users", []any{"alice@example.com"}), "operator.groups", []any{"sre"})
	b := binding(vals)
	if b == nil {
		t.Fatal("no RoleBinding osm-operator-token with operator.users and operator.groups set")
	}
	for _, want := range []string{"kind: User\n    name: \"alice@example.com\"", "kind: Group\n    name: \"sre\"", "name: osm-operator-token"} {
		if !strings.Contains(b.YAML, want) {
			t.Errorf("the RoleBinding lacks %q:\n%s", want, b.YAML)
		}
	}
}

// TestMeshConfigSidecarValuesRender: values.yaml documents
// meshConfig.spec.sidecar.maxDataPlaneConnections (the per-edge-replica
// stream limit) as a commented example, and a value set there reaches the
// rendered MeshConfig's spec.sidecar beside the defaults.
func TestMeshConfigSidecarValuesRender(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, mcSection, _ := strings.Cut(string(raw), "\nmeshConfig:\n")
	mcSection, _, _ = strings.Cut(mcSection, "\n\n")
	if !regexp.MustCompile(`(?m)^      # maxDataPlaneConnections: \d+$`).MatchString(mcSection) {
		t.Error("values.yaml's meshConfig.spec.sidecar has no commented maxDataPlaneConnections example")
	}
	vals := set(t, valuesFile(t, ""), "meshConfig.spec.sidecar.maxDataPlaneConnections", 500)
	r, err := render(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	mc, ok := byKey(t, objects(t, r.Manifest))["MeshConfig/osm-system/osm-mesh-config"]
	if !ok {
		t.Fatal("no MeshConfig osm-system/osm-mesh-config rendered")
	}
	spec, _ := mc.Body["spec"].(map[string]any)
	sidecar, _ := spec["sidecar"].(map[string]any)
	if got := fmt.Sprint(sidecar["maxDataPlaneConnections"]); got != "500" || sidecar["logLevel"] != "error" {
		t.Errorf("spec.sidecar %v, want maxDataPlaneConnections 500 beside logLevel error", sidecar)
	}
}
