package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// cpSpec is a service that registers the selected ControlPlane flags and
// hands the parsed group to got.
func cpSpec(use CPFlag, got *ControlPlane) Spec {
	var cp ControlPlane
	return Spec{Name: "demo", Summary: "Demo.",
		Flags:    func(f *Flags) { cp.Flags(f, use) },
		Validate: cp.Validate,
		Run: func(context.Context, *Runtime) error {
			*got = cp
			return nil
		}}
}

func TestControlPlaneFlagsRegisterOnlyWhatIsSelected(t *testing.T) {
	var out bytes.Buffer
	var cp ControlPlane
	if err := Run(t.Context(), cpSpec(CPMeshConfig|CPPodName, &cp), []string{"--help"}, noenv, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--namespace", "--mesh-config", "--pod-name", "env OSM_POD_NAME", "default osm-mesh-config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
	for _, absent := range []string{"--trust-domain", "--mesh-name", "--cluster-domain"} {
		if strings.Contains(out.String(), absent) {
			t.Errorf("--help lists %s, which was not selected", absent)
		}
	}
}

func TestControlPlaneDefaultsAndValidation(t *testing.T) {
	all := CPNamespace | CPPodName | CPMeshName | CPMeshConfig | CPTrustDomain | CPClusterDomain
	var cp ControlPlane
	if err := Run(t.Context(), cpSpec(all, &cp), []string{"--admin-addr", "127.0.0.1:0"}, noenv, io.Discard); err != nil {
		t.Fatal(err)
	}
	if cp.Namespace != "osm-system" || cp.MeshName != "osm" || cp.MeshConfig != "osm-mesh-config" || cp.TrustDomain != "cluster.local" || cp.ClusterDomain != "cluster.local" {
		t.Errorf("defaults: %+v", cp)
	}
	if cp.PodName == "" {
		t.Error("an empty --pod-name was not filled from the host name")
	}
	cp = ControlPlane{}
	if err := Run(t.Context(), cpSpec(all, &cp), []string{"--admin-addr", "127.0.0.1:0", "--pod-name", "edge-7"}, envOf(map[string]string{"OSM_NAMESPACE": "mesh-cp"}), io.Discard); err != nil {
		t.Fatal(err)
	}
	if cp.PodName != "edge-7" || cp.Namespace != "mesh-cp" {
		t.Errorf("pod name %q, namespace %q", cp.PodName, cp.Namespace)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--namespace", "Osm_System"}, "--namespace"},
		{[]string{"--mesh-config", "osm-system/osm-mesh-config"}, "--mesh-config (OSM_MESH_CONFIG): is the MeshConfig's name in --namespace"},
		{[]string{"--mesh-name", ""}, "--mesh-name"},
		{[]string{"--trust-domain", "spiffe://cluster.local"}, "--trust-domain"},
		{[]string{"--trust-domain", "cluster..local"}, "--trust-domain"},
		{[]string{"--trust-domain", ".local"}, "--trust-domain"},
		{[]string{"--cluster-domain", "cluster..local"}, "--cluster-domain"},
	} {
		err := Run(t.Context(), cpSpec(all, &ControlPlane{}), c.args, noenv, io.Discard)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want a configuration error naming %q", c.args, err, c.want)
		}
	}
}

func TestDeprecatedNamesSetTheFlagAndWarn(t *testing.T) {
	type got struct {
		qps    int
		holder string
	}
	spec := func(g *got) Spec {
		var qps int
		var cp ControlPlane
		return Spec{Name: "demo", Summary: "Demo.",
			Flags: func(f *Flags) {
				f.Int(&qps, "kube-api-qps", 50, "Kubernetes API requests per second")
				f.Deprecated("kube-qps", "kube-api-qps")
				cp.Flags(f, CPPodName)
				f.Deprecated("holder", "pod-name")
			},
			Validate: cp.Validate,
			Run: func(context.Context, *Runtime) error {
				*g = got{qps, cp.PodName}
				return nil
			}}
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want got
		warn []string
	}{
		{"old flag", []string{"--kube-qps", "7", "--holder", "c-1"}, nil, got{7, "c-1"}, []string{`"flag":"--kube-qps"`, `"use":"--kube-api-qps"`, `"flag":"--holder"`}},
		{"old env", nil, map[string]string{"OSM_KUBE_QPS": "8", "OSM_HOLDER": "c-2"}, got{8, "c-2"}, []string{`"flag":"--kube-qps"`, `"flag":"--holder"`}},
		{"new env wins over old env", nil, map[string]string{"OSM_KUBE_QPS": "8", "OSM_KUBE_API_QPS": "9", "OSM_POD_NAME": "p"}, got{9, "p"}, nil},
		{"a flag wins over an old env", []string{"--kube-api-qps", "10", "--pod-name", "q"}, map[string]string{"OSM_KUBE_QPS": "8", "OSM_HOLDER": "c"}, got{10, "q"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var g got
			var out bytes.Buffer
			args := append([]string{"--admin-addr", "127.0.0.1:0"}, c.args...)
			if err := Run(t.Context(), spec(&g), args, envOf(c.env), &out); err != nil {
				t.Fatal(err)
			}
			if g != c.want {
				t.Errorf("got %+v, want %+v", g, c.want)
			}
			for _, w := range c.warn {
				if !strings.Contains(out.String(), w) {
					t.Errorf("log lacks %s:\n%s", w, out.String())
				}
			}
			if c.warn == nil && strings.Contains(out.String(), "deprecated flag name used") {
				t.Errorf("warned although no deprecated name was used:\n%s", out.String())
			}
		})
	}
	var out bytes.Buffer
	if err := Run(t.Context(), spec(&got{}), []string{"--help"}, noenv, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--kube-qps, env OSM_KUBE_QPS: use --kube-api-qps") {
		t.Errorf("--help does not list the deprecated name:\n%s", out.String())
	}
}
