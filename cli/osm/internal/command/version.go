package command

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/cli/osm/internal/chart"
	"github.com/openservicemesh/osm/libs/buildinfo"
)

// version is this osm's version. Release builds set it:
//
//	go build -ldflags "-X github.com/openservicemesh/osm/cli/osm/internal/command.version=v1.2.3"
//
// Unset, it is the module's version, or the commit a checkout was built
// from ("-dirty" with changes), as the components report theirs (libs/app).
var version string

// Labels of the chart's workloads (deploy/charts/osm, osm.labels).
const (
	wlComponentLabel = "app.kubernetes.io/component"
	wlVersionLabel   = "app.kubernetes.io/version"
)

// clientVersion is osm version's account of this binary.
type clientVersion struct {
	Version         string `json:"version"`
	GoVersion       string `json:"goVersion"`
	Platform        string `json:"platform"`
	Chart           string `json:"chart"`
	ChartAppVersion string `json:"chartAppVersion"`
}

// workloadVersion is one control-plane workload's version.
type workloadVersion struct {
	Component string   `json:"component"`
	Kind      string   `json:"kind"`
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	Images    []string `json:"images"`
	Ready     int32    `json:"ready"`
	Desired   int32    `json:"desired"`
	// Skew is true when Version is not the embedded chart's appVersion.
	Skew bool `json:"skew"`
}

// versions is osm version's answer.
type versions struct {
	Client clientVersion `json:"client"`
	// Namespace is the control plane's, Components its workloads; both
	// absent with --client.
	Namespace  string            `json:"namespace,omitempty"`
	Components []workloadVersion `json:"components,omitempty"`
}

func versionCommand(g *globals) *cobra.Command {
	var client bool
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the version of osm and of the mesh's components",
		Long: `version shows this osm's version, the version of the chart built into it
(what osm install installs), and, unless --client, the version of each
control-plane component installed in --namespace: every Deployment and
StatefulSet labelled app.kubernetes.io/part-of=osm, with its
app.kubernetes.io/version label (the image tag the chart gave it), its
images and its ready replicas. A component of another version than the
embedded chart's appVersion shows it beside its own ("skew": true in
json and yaml); osm upgrade installs the embedded chart.

The exit code is non-zero when the cluster cannot be read (the client's
version is printed first). Against the dev stack, the context file's
kubeconfig and namespace are used (--osm-context or $OSM_CONTEXT).`,
		Example: `  # this osm and the installed mesh
  osm version

  # this osm only, without reaching a cluster
  osm version --client

  # the components' versions as JSON
  osm version -o json | jq -r '.components[] | .component + " " + .version'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			v := versions{Client: thisVersion()}
			if client {
				return versionTable(v, true).print(g.streams.Out, output)
			}
			err := g.useContextFile(cmd)
			var cs kubernetes.Interface
			if err == nil {
				cs, err = g.clientset()
			}
			if err == nil {
				v, err = clusterVersions(cmd.Context(), cs, g.namespace)
			}
			if err != nil {
				// The client's version still helps.
				if perr := versionTable(v, true).print(g.streams.Out, output); perr != nil {
					return perr
				}
				return fmt.Errorf("%w (osm version --client skips the cluster)", err)
			}
			if len(v.Components) == 0 && output == "table" {
				defer fmt.Fprintf(g.streams.Err, "no component of the mesh in namespace %s: osm install installs it (or set --namespace)\n", g.namespace)
			}
			return versionTable(v, false).print(g.streams.Out, output)
		},
	}
	cmd.Flags().BoolVar(&client, "client", false, "show this osm's version only, without reaching the cluster")
	addOutputFlag(cmd, &output)
	return cmd
}

// thisVersion is the binary's version, Go version, platform and embedded
// chart.
func thisVersion() clientVersion {
	c := clientVersion{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if c.Version == "" {
		c.Version = buildinfo.Version()
	}
	if ch, err := chart.Load(); err == nil && ch.Metadata != nil {
		c.Chart, c.ChartAppVersion = ch.Metadata.Version, ch.Metadata.AppVersion
	}
	return c
}

// clusterVersions is this osm's version and the version of each
// component of the mesh in ns, its skew against the embedded chart marked;
// the client's on an error.
func clusterVersions(ctx context.Context, cs kubernetes.Interface, ns string) (versions, error) {
	v := versions{Client: thisVersion()}
	comps, err := meshWorkloadVersions(ctx, cs, ns)
	if err != nil {
		return v, err
	}
	v.Namespace, v.Components = ns, comps
	for i := range v.Components {
		v.Components[i].Skew = v.Components[i].Version != v.Client.ChartAppVersion
	}
	return v, nil
}

// meshWorkloadVersions reads the mesh's Deployments and StatefulSets in ns.
func meshWorkloadVersions(ctx context.Context, cs kubernetes.Interface, ns string) ([]workloadVersion, error) {
	sel := metav1.ListOptions{LabelSelector: partOfLabel + "=osm"}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the Deployments of the mesh in namespace %s: %w", ns, err)
	}
	sets, err := cs.AppsV1().StatefulSets(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the StatefulSets of the mesh in namespace %s: %w", ns, err)
	}
	var out []workloadVersion
	add := func(kind string, m metav1.ObjectMeta, replicas *int32, ready int32, images []string) {
		c := workloadVersion{Component: m.Labels[wlComponentLabel], Kind: kind, Name: m.Name, Version: m.Labels[wlVersionLabel], Images: images, Ready: ready, Desired: 1}
		if c.Component == "" {
			c.Component = m.Name
		}
		if c.Version == "" {
			c.Version = "unknown"
		}
		if replicas != nil {
			c.Desired = *replicas
		}
		out = append(out, c)
	}
	for _, d := range deps.Items {
		var imgs []string
		for _, c := range d.Spec.Template.Spec.Containers {
			imgs = append(imgs, c.Image)
		}
		add("Deployment", d.ObjectMeta, d.Spec.Replicas, d.Status.ReadyReplicas, imgs)
	}
	for _, s := range sets.Items {
		var imgs []string
		for _, c := range s.Spec.Template.Spec.Containers {
			imgs = append(imgs, c.Image)
		}
		add("StatefulSet", s.ObjectMeta, s.Spec.Replicas, s.Status.ReadyReplicas, imgs)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Component != out[b].Component {
			return out[a].Component < out[b].Component
		}
		return out[a].Name < out[b].Name
	})
	return out, nil
}

// versionTable: the client's row, then one per component (none with
// clientOnly).
func versionTable(v versions, clientOnly bool) table {
	t := table{header: []string{"COMPONENT", "NAME", "VERSION", "READY", "IMAGE"}}
	t.rows = append(t.rows, []string{"osm (this CLI)", "-", v.Client.Version, "-",
		fmt.Sprintf("embedded chart %s (app %s), %s, %s", v.Client.Chart, v.Client.ChartAppVersion, v.Client.GoVersion, v.Client.Platform)})
	if clientOnly {
		t.value = struct {
			Client clientVersion `json:"client"`
		}{v.Client}
		return t
	}
	t.value = v
	for _, c := range v.Components {
		ver := c.Version
		if c.Skew {
			ver += " (chart: " + v.Client.ChartAppVersion + ")"
		}
		t.rows = append(t.rows, []string{c.Component, strings.ToLower(c.Kind) + "/" + c.Name, ver, fmt.Sprintf("%d/%d", c.Ready, c.Desired), strings.Join(c.Images, ",")})
	}
	return t
}
