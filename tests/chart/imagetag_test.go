package chart

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestImagesTagIsTheChartsTag checks that `make images` with no TAG tags
// the images with the tag the chart's default values pull (its
// appVersion), so that make images, make push and helm install agree, and
// that TAG=… still overrides it. It reads the command make would run
// (make -n), which builds nothing.
func TestImagesTagIsTheChartsTag(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	repo := filepath.Join(chartDir(t), "..", "..", "..")
	tagOf := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-n", "images"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n images %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		m := regexp.MustCompile(`--tag '([^']*)'`).FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("make -n images %s passes no --tag:\n%s", strings.Join(args, " "), out)
		}
		return m[1]
	}

	appVersion := loadChart(t).Metadata.AppVersion
	if got := tagOf(); got != appVersion {
		t.Errorf("make images tags %q, want the chart's appVersion %q", got, appVersion)
	}
	if got := tagOf("TAG=v9.8.7"); got != "v9.8.7" {
		t.Errorf("make images TAG=v9.8.7 tags %q", got)
	}

	// Every image the default values name is <registry>/osm-<service> at
	// that tag.
	r, err := render(t, valuesFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objects(t, r.Manifest) {
		if kind := o.Body["kind"]; kind != "Deployment" {
			continue
		}
		img := container(t, o).Image
		if !strings.Contains(img, "/osm-") || !strings.HasSuffix(img, ":"+appVersion) {
			t.Errorf("%s: image %q, want <registry>/osm-<service>:%s", o.Key, img, appVersion)
		}
		n++
	}
	if n < 5 {
		t.Errorf("%d Deployments rendered, want the 5 services'", n)
	}
}
