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

// diff shows where want and got first differ, with a few lines of each.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	from := max(i-3, 0)
	excerpt := func(lines []string) string {
		return strings.Join(lines[min(from, len(lines)):min(i+6, len(lines))], "\n")
	}
	return "first difference at line " + strconv.Itoa(i+1) + "\n--- want\n" + excerpt(w) + "\n--- got\n" + excerpt(g)
}
