package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// crdResource is the CustomResourceDefinition API.
var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// CRDDir returns the repository's deploy/charts/osm/crds directory (the
// CRDs' one home, the umbrella chart's crds/), found next to the kubebox
// module (see SourceDir).
func CRDDir() (string, error) {
	src, err := SourceDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(src, "..", "..", "deploy", "charts", "osm", "crds")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("crd dir: %w", err)
	}
	return filepath.Clean(dir), nil
}

// ApplyCRDs creates or updates every CustomResourceDefinition in the *.yaml
// files of dir, then waits until each is Established and its served versions
// answer a list request.
func (c *Cluster) ApplyCRDs(ctx context.Context, dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("no *.yaml files in %s", dir)
	}
	sort.Strings(paths)
	var crds []*unstructured.Unstructured
	for _, p := range paths {
		objs, err := readObjects(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				return fmt.Errorf("%s: %s %q is not a CustomResourceDefinition", p, o.GetKind(), o.GetName())
			}
			crds = append(crds, o)
		}
	}
	client := c.dynamic.Resource(crdResource)
	for _, crd := range crds {
		_, err := client.Create(ctx, crd, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *unstructured.Unstructured
			if cur, err = client.Get(ctx, crd.GetName(), metav1.GetOptions{}); err == nil {
				crd.SetResourceVersion(cur.GetResourceVersion())
				_, err = client.Update(ctx, crd, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			return fmt.Errorf("apply crd %s: %w", crd.GetName(), err)
		}
	}
	for _, crd := range crds {
		if err := c.waitCRD(ctx, crd); err != nil {
			return err
		}
	}
	return nil
}

// waitCRD waits for the CRD's Established condition and for every served
// version to be listable.
func (c *Cluster) waitCRD(ctx context.Context, crd *unstructured.Unstructured) error {
	name := crd.GetName()
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := c.dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err
			return false, nil
		}
		if !crdEstablished(cur) {
			last = errors.New("not Established")
			return false, nil
		}
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			if served, _ := vm["served"].(bool); !served {
				continue
			}
			version, _ := vm["name"].(string)
			gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: plural}
			if _, err := c.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
				last = fmt.Errorf("list %s: %w", gvr, err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("crd %s not ready: %w (last: %v)", name, err, last)
	}
	return nil
}

func crdEstablished(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		cm, _ := c.(map[string]any)
		if cm["type"] == "Established" && cm["status"] == "True" {
			return true
		}
	}
	return false
}

// readObjects decodes every YAML document in the file at path.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 { // empty document
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}
