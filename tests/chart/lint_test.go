package chart

import (
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
)

// TestLint: `helm lint --strict` passes with every values file of the chart.
func TestLint(t *testing.T) {
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = namespace
			kv, err := common.ParseKubeVersion(kubeVersion)
			if err != nil {
				t.Fatal(err)
			}
			l.KubeVersion = kv
			res := l.Run([]string{chartDir(t)}, valuesFile(t, vf))
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 {
				var msgs []string
				for _, err := range res.Errors {
					msgs = append(msgs, err.Error())
				}
				t.Fatalf("lint failed:\n%s", strings.Join(msgs, "\n"))
			}
			if res.TotalChartsLinted != 1 {
				t.Fatalf("linted %d charts, want 1", res.TotalChartsLinted)
			}
		})
	}
}
