package chart

import (
	"fmt"
	"strings"
	"testing"
)

// components maps the values key of each subchart to its component name
// and its workload.
var components = map[string]struct{ component, workload string }{
	"smiWatcher":     {"smi-watcher", "Deployment/osm-system/osm-smi-watcher"},
	"policyCompiler": {"policy-compiler", "Deployment/osm-system/osm-policy-compiler"},
	"certAuthority":  {"cert-authority", "Deployment/osm-system/osm-cert-authority"},
	"injector":       {"injector-webhook", "Deployment/osm-system/osm-injector-webhook"},
	"xdsEdge":        {"xds-edge", "Deployment/osm-system/osm-xds-edge"},
	"nats":           {"nats", "StatefulSet/osm-system/osm-nats"},
}

// TestEachComponentAlone: a component's sizing and scheduling values reach
// its pods and change no other component's objects, and disabling it
// removes its objects and no other's.
func TestEachComponentAlone(t *testing.T) {
	base, err := render(t, valuesFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	before := byKey(t, objects(t, golden(t, base.Manifest)))
	for alias, c := range components {
		t.Run(alias, func(t *testing.T) {
			v := valuesFile(t, "")
			v = set(t, v, alias+".resources", map[string]any{"requests": map[string]any{"cpu": "1234m"}})
			v = set(t, v, alias+".nodeSelector", map[string]any{"pool": "mesh-" + alias})
			v = set(t, v, alias+".tolerations", []any{map[string]any{"key": "mesh", "operator": "Exists"}})
			v = set(t, v, alias+".affinity", map[string]any{"nodeAffinity": map[string]any{
				"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{
					map[string]any{"matchExpressions": []any{map[string]any{"key": "zone", "operator": "In", "values": []any{"z-" + alias}}}}}}}})
			v = set(t, v, alias+".priorityClassName", "prio-"+alias)
			v = set(t, v, alias+".podAnnotations", map[string]any{"note": alias})
			v = set(t, v, alias+".pdb", map[string]any{"enabled": false})
			if alias != "nats" {
				v = set(t, v, alias+".replicas", 7)
				if alias == "xdsEdge" {
					v = set(t, v, "xdsEdge.autoscaling.enabled", false)
				}
			}
			r, err := render(t, v)
			if err != nil {
				t.Fatal(err)
			}
			after := byKey(t, objects(t, golden(t, r.Manifest)))
			for _, key := range changedObjects(t, before, after) {
				o, ok := after[key]
				if !ok {
					o = before[key]
				}
				if got := componentOf(o); got != c.component {
					t.Errorf("%s changed though it belongs to %q", key, got)
				}
			}
			w, ok := after[c.workload]
			if !ok {
				t.Fatalf("no %s", c.workload)
			}
			for _, want := range []string{"cpu: 1234m", "pool: mesh-" + alias, "key: mesh", "- z-" + alias,
				"priorityClassName: prio-" + alias, "note: " + alias} {
				if !strings.Contains(w.YAML, want) {
					t.Errorf("%s lacks %q", c.workload, want)
				}
			}
			if alias != "nats" && !strings.Contains(w.YAML, "\n  replicas: 7\n") {
				t.Errorf("%s does not run 7 replicas", c.workload)
			}
			if _, ok := after[fmt.Sprintf("PodDisruptionBudget/osm-system/osm-%s", c.component)]; ok {
				t.Errorf("the PDB of %s is still rendered with pdb.enabled=false", c.component)
			}

			// Disabled: its objects go, and only its.
			r, err = render(t, set(t, valuesFile(t, ""), alias+".enabled", false))
			if err != nil {
				t.Fatal(err)
			}
			off := byKey(t, objects(t, golden(t, r.Manifest)))
			for _, key := range changedObjects(t, before, off) {
				if _, still := off[key]; still {
					t.Errorf("disabling %s changed %s", alias, key)
				} else if got := componentOf(before[key]); got != c.component {
					t.Errorf("disabling %s removed %s, of %q", alias, key, got)
				}
			}
			if _, ok := off[c.workload]; ok {
				t.Errorf("%s rendered with %s.enabled=false", c.workload, alias)
			}
		})
	}
}
