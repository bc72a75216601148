package chart

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/yaml"
)

// releaseName and namespace of every render and install.
const (
	releaseName = "osm"
	namespace   = "osm-system"
	// kubeVersion is the harness's (tests/kubebox builds k8s.io/kubernetes v1.34.4).
	kubeVersion = "v1.34.4"
)

// chartDir is deploy/charts/osm, found from this file's path.
func chartDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "charts", "osm")
}

// loadChart loads the umbrella chart with its subcharts.
func loadChart(t testing.TB) *chartv2.Chart {
	t.Helper()
	c, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// valuesFile reads one of the chart's values files ("" for none).
func valuesFile(t testing.TB, name string) map[string]any {
	t.Helper()
	if name == "" {
		return map[string]any{}
	}
	v, err := common.ReadValuesFile(filepath.Join(chartDir(t), name))
	if err != nil {
		t.Fatalf("values %s: %v", name, err)
	}
	return v
}

// quiet is a Helm configuration option that drops Helm's logs.
func quiet() action.ConfigurationOption {
	return action.ConfigurationSetLogger(slog.NewTextHandler(io.Discard, nil))
}

// render renders the chart client-side, as `helm template` does, and
// returns the release (its Manifest holds every object but the CRDs).
func render(t testing.TB, vals map[string]any) (*releasev1.Release, error) {
	t.Helper()
	in := action.NewInstall(action.NewConfiguration(quiet()))
	in.DryRunStrategy = action.DryRunClient
	in.ReleaseName = releaseName
	in.Namespace = namespace
	in.Replace = true
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	in.KubeVersion = kv
	r, err := in.RunWithContext(context.Background(), loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	return r.(*releasev1.Release), nil
}

// object is one rendered manifest, keyed by kind/namespace/name.
type object struct {
	Key  string
	Body map[string]any
	YAML string
}

// objects splits a release manifest into its objects, sorted by key.
func objects(t testing.TB, manifest string) []object {
	t.Helper()
	var out []object
	for _, doc := range strings.Split(manifest, "\n---") {
		doc = strings.TrimSpace(strings.TrimPrefix(doc, "---"))
		if doc == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("decode rendered object: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		md, _ := m["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%v/%v", m["kind"], md["namespace"], md["name"])
		out = append(out, object{Key: key, Body: m, YAML: doc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// byKey indexes objects by key and fails on a duplicate.
func byKey(t testing.TB, objs []object) map[string]object {
	t.Helper()
	m := make(map[string]object, len(objs))
	for _, o := range objs {
		if _, dup := m[o.Key]; dup {
			t.Fatalf("two rendered objects are %s", o.Key)
		}
		m[o.Key] = o
	}
	return m
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// valuesFiles are the chart's values files the tests render: the defaults
// alone ("") and each file over them.
var valuesFiles = []string{"", "values-dev.yaml", "values-large.yaml", "values-vault.yaml"}

// name is a values file's short name for subtests and golden files.
func name(valuesFile string) string {
	if valuesFile == "" {
		return "default"
	}
	return strings.TrimSuffix(strings.TrimPrefix(valuesFile, "values-"), ".yaml")
}

// podContainer is the part of a rendered container the tests read.
type podContainer struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Env   []struct {
		Name      string `json:"name"`
		ValueFrom struct {
			FieldRef struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	} `json:"env"`
}

// container is the first container of a rendered Deployment or StatefulSet.
func container(t testing.TB, o object) podContainer {
	t.Helper()
	var w struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []podContainer `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(o.YAML), &w); err != nil {
		t.Fatalf("%s: %v", o.Key, err)
	}
	if len(w.Spec.Template.Spec.Containers) == 0 {
		t.Fatalf("%s has no container", o.Key)
	}
	return w.Spec.Template.Spec.Containers[0]
}
