package chart

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden renders in testdata/")

// TestGoldenRenders: the rendered manifests of the default, dev, large and
// Vault values equal testdata/<name>.yaml (refresh with -update). The
// Secrets' generated data (NATS passwords and certificates, new at each
// render without a cluster) is redacted.
func TestGoldenRenders(t *testing.T) {
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			r, err := render(t, valuesFile(t, vf))
			if err != nil {
				t.Fatal(err)
			}
			got := golden(t, r.Manifest)
			path := filepath.Join("testdata", name(vf)+".yaml")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("render of %s differs from %s (run with -update to accept):\n%s", name(vf), path, diff(string(want), got))
			}
		})
	}
}

// secretData matches a data entry of a Secret.
var secretData = regexp.MustCompile(`(?m)^(  [A-Za-z0-9._-]+): \S+$`)

// golden is the manifest in a stable form: objects sorted by key, the
// generated Secret data redacted.
func golden(t testing.TB, manifest string) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objects(t, manifest) {
		doc := o.YAML
		if o.Body["kind"] == "Secret" {
			head, data, ok := strings.Cut(doc, "\ndata:\n")
			if ok {
				doc = head + "\ndata:\n" + secretData.ReplaceAllString(data, "$1: <generated>")
			}
		}
		b.WriteString("---\n" + doc + "\n")
	}
	return b.String()
}

// diff lists the lines of want and got that differ, at most 40.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out = append(out, "line "+strconv.Itoa(i+1)+":\n  - "+a+"\n  + "+b)
			if len(out) == 40 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
