package chart

import (
	"reflect"
	"strings"
	"testing"
)

// canaryValues are the default values with an edge canary at tag.
func canaryValues(t testing.TB, tag string) map[string]any {
	t.Helper()
	v := set(t, valuesFile(t, ""), "xdsEdge.canary.enabled", true)
	return set(t, v, "xdsEdge.canary.image.tag", tag)
}

// TestEdgeCanary: xdsEdge.canary adds a second edge Deployment at its own
// tag, with the same flags, selected by the same ADS Service but not by
// the stable Deployment or its HPA; turning it on changes no other object.
func TestEdgeCanary(t *testing.T) {
	base, err := render(t, valuesFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	r, err := render(t, canaryValues(t, "v0.2.0-rc1"))
	if err != nil {
		t.Fatal(err)
	}
	before := byKey(t, objects(t, golden(t, base.Manifest)))
	after := byKey(t, objects(t, golden(t, r.Manifest)))
	const stableKey, canaryKey = "Deployment/osm-system/osm-xds-edge", "Deployment/osm-system/osm-xds-edge-canary"
	if changed := changedObjects(t, before, after); !reflect.DeepEqual(changed, []string{canaryKey}) {
		t.Fatalf("enabling the canary changed %v; want only the new %s", changed, canaryKey)
	}
	stable, canary := after[stableKey], after[canaryKey]
	sc, cc := container(t, stable), container(t, canary)
	if !strings.HasSuffix(cc.Image, "/osm-xds-edge:v0.2.0-rc1") || strings.HasSuffix(sc.Image, ":v0.2.0-rc1") {
		t.Errorf("images: stable %s, canary %s", sc.Image, cc.Image)
	}
	if !reflect.DeepEqual(sc.Args, cc.Args) {
		t.Errorf("the canary's flags differ:\nstable %v\ncanary %v", sc.Args, cc.Args)
	}
	if got := field(t, canary, "spec", "replicas"); got != float64(1) {
		t.Errorf("canary replicas %v, want 1", got)
	}

	svcSel := stringMap(field(t, after["Service/osm-system/osm-xds-edge"], "spec", "selector"))
	stableSel := stringMap(field(t, stable, "spec", "selector", "matchLabels"))
	canarySel := stringMap(field(t, canary, "spec", "selector", "matchLabels"))
	hpa := field(t, after["HorizontalPodAutoscaler/osm-system/osm-xds-edge"], "spec", "scaleTargetRef", "name")
	for _, c := range []struct {
		what     string
		selector map[string]string
		pod      object
		want     bool
	}{
		{"the ADS Service selects the stable pods", svcSel, stable, true},
		{"the ADS Service selects the canary pods", svcSel, canary, true},
		{"the stable Deployment selects its pods", stableSel, stable, true},
		{"the stable Deployment selects the canary pods", stableSel, canary, false},
		{"the canary Deployment selects the stable pods", canarySel, stable, false},
		{"the canary Deployment selects its pods", canarySel, canary, true},
	} {
		if got := selects(c.selector, stringMap(field(t, c.pod, "spec", "template", "metadata", "labels"))); got != c.want {
			t.Errorf("%s: %v, want %v", c.what, got, c.want)
		}
	}
	if hpa != "osm-xds-edge" {
		t.Errorf("the HPA scales %v, want the stable edges", hpa)
	}

	// Enabled without a tag (or digest): a schema error naming the canary.
	_, err = render(t, set(t, valuesFile(t, ""), "xdsEdge.canary.enabled", true))
	if err == nil || !strings.Contains(err.Error(), "/xdsEdge/canary/image") {
		t.Errorf("a canary without a tag: %v, want a schema error naming /xdsEdge/canary/image", err)
	}
}

// field reads a nested field of a rendered object.
func field(t testing.TB, o object, path ...string) any {
	t.Helper()
	var cur any = o.Body
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: no %s", o.Key, strings.Join(path, "."))
		}
		cur = m[p]
	}
	return cur
}

func stringMap(v any) map[string]string {
	out := map[string]string{}
	m, _ := v.(map[string]any)
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out
}

// selects reports whether a matchLabels selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
