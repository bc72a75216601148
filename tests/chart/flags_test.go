package chart

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// serviceOf maps the chart's Deployments to their service's directory.
var serviceOf = map[string]string{
	"osm-smi-watcher":      "smi-watcher",
	"osm-policy-compiler":  "policy-compiler",
	"osm-cert-authority":   "cert-authority",
	"osm-injector-webhook": "injector-webhook",
	"osm-xds-edge":         "xds-edge",
}

var (
	helpFlag = regexp.MustCompile(`(?m)^  (--[a-z0-9-]+)\b`)
	helpEnv  = regexp.MustCompile(`env (OSM_[A-Z0-9_]+)`)
)

// serviceHelp builds services/<name> alone (GOWORK=off, as its image is
// built) and returns the flags and environment variables its --help lists,
// deprecated aliases left out.
func serviceHelp(t *testing.T, name string) (flags, envs []string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(chartDir(t), "..", "..", "..", "services", name)
	build.Env = append(build.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	help, _, _ := strings.Cut(string(out), "Deprecated names")
	for _, m := range helpFlag.FindAllStringSubmatch(help, -1) {
		flags = append(flags, m[1])
	}
	for _, m := range helpEnv.FindAllStringSubmatch(help, -1) {
		envs = append(envs, m[1])
	}
	if len(flags) < 10 {
		t.Fatalf("%s --help lists %d flags:\n%s", name, len(flags), out)
	}
	return flags, envs
}

// TestEveryFlagIsReal: every flag and OSM_* variable the chart gives a
// service, with every values file, is one its --help lists, and a service
// that has --pod-name gets OSM_POD_NAME from the downward API.
func TestEveryFlagIsReal(t *testing.T) {
	help := map[string][2][]string{}
	for _, name := range serviceOf {
		f, e := serviceHelp(t, name)
		help[name] = [2][]string{f, e}
	}
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			r, err := render(t, valuesFile(t, vf))
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, o := range objects(t, r.Manifest) {
				md, _ := o.Body["metadata"].(map[string]any)
				svc, ok := serviceOf[md["name"].(string)]
				if o.Body["kind"] != "Deployment" || !ok {
					continue
				}
				seen++
				flags, envs := help[svc][0], help[svc][1]
				c := container(t, o)
				for _, a := range c.Args {
					flag, _, _ := strings.Cut(a, "=")
					if !slices.Contains(flags, flag) {
						t.Errorf("%s: %s is not a flag of %s", o.Key, flag, svc)
					}
				}
				podName := false
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "OSM_") && !slices.Contains(envs, e.Name) {
						t.Errorf("%s: %s is not an environment variable of %s", o.Key, e.Name, svc)
					}
					if e.Name == "OSM_POD_NAME" && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
						podName = true
					}
				}
				if slices.Contains(flags, "--pod-name") != podName {
					t.Errorf("%s: has --pod-name %v, gets OSM_POD_NAME from metadata.name %v", o.Key, slices.Contains(flags, "--pod-name"), podName)
				}
			}
			if seen != len(serviceOf) {
				t.Errorf("rendered %d service Deployments, want %d", seen, len(serviceOf))
			}
		})
	}
}
