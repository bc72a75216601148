package meshconfig

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// crdSpecSchema is the openAPIV3Schema of the chart's MeshConfig CRD, at
// spec.
func crdSpecSchema(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "charts", "osm", "crds", "config.openservicemesh.io_meshconfigs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	v := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
	return v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)["spec"].(map[string]any)
}

// sample is a value the schema s accepts and that is not its zero value.
func sample(s map[string]any) any {
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		return e[0]
	}
	switch s["type"] {
	case "boolean":
		return true
	case "integer":
		if m, ok := s["minimum"].(float64); ok && m > 0 {
			return int64(m)
		}
		return int64(1)
	case "number":
		return 0.5
	case "array":
		return []any{sample(s["items"].(map[string]any))}
	case "object":
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			return map[string]any{"cpu": sample(ap)}
		}
	}
	if s["x-kubernetes-int-or-string"] == true {
		return "1"
	}
	switch s["pattern"] {
	case "^/":
		return "/api/v2/spans"
	case nil:
		return "x"
	}
	return "1h" // the duration pattern
}

// leaves lists the CRD's leaf fields under s as paths from spec.
func leaves(s map[string]any, path []string, out *[][]string) {
	props, ok := s["properties"].(map[string]any)
	if !ok {
		*out = append(*out, append([]string(nil), path...))
		return
	}
	for name, p := range props {
		leaves(p.(map[string]any), append(path, name), out)
	}
}

// TestEveryCRDFieldIsRead: each leaf field of the chart's MeshConfig CRD
// changes what Parse returns, so the CRD has no field that nothing reads
// (configResyncInterval was one). docs/MESHCONFIG.md says which component
// follows each.
func TestEveryCRDFieldIsRead(t *testing.T) {
	spec := crdSpecSchema(t)
	var paths [][]string
	leaves(spec, nil, &paths)
	sort.Slice(paths, func(i, j int) bool { return strings.Join(paths[i], ".") < strings.Join(paths[j], ".") })
	if len(paths) < 20 {
		t.Fatalf("only %d leaf fields found: %v", len(paths), paths)
	}
	for _, path := range paths {
		// The same parents, empty, then with the leaf set.
		build := func(leaf any) map[string]any {
			root := map[string]any{}
			m, s := root, spec
			for i, name := range path {
				s = s["properties"].(map[string]any)[name].(map[string]any)
				if i == len(path)-1 {
					if leaf != nil {
						m[name] = leaf
					}
					break
				}
				next := map[string]any{}
				m[name] = next
				m = next
			}
			return root
		}
		leafSchema := spec
		for _, name := range path {
			leafSchema = leafSchema["properties"].(map[string]any)[name].(map[string]any)
		}
		parse := func(specVal map[string]any) proto.Message {
			return Parse(&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "m"}, "spec": specVal}})
		}
		empty, set := parse(build(nil)), parse(build(sample(leafSchema)))
		if len(set.(interface{ GetInvalidFields() []*meshv1.InvalidField }).GetInvalidFields()) > 0 {
			t.Errorf("spec.%s: the sample value %v does not parse", strings.Join(path, "."), sample(leafSchema))
		}
		if proto.Equal(empty, set) {
			t.Errorf("spec.%s is in the CRD but Parse does not read it: follow it or remove it from the CRD", strings.Join(path, "."))
		}
	}
}
