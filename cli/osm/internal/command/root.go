// Package command is the osm CLI's command tree (cobra): install, upgrade
// and uninstall through the Helm v4 SDK with the embedded chart, and the
// namespace commands, all against the cluster of the usual kubeconfig
// flags (client-go's clientcmd).
package command

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"helm.sh/helm/v4/pkg/action"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/osmctx"
)

// DefaultNamespace is the control plane's namespace unless --namespace says
// otherwise.
const DefaultNamespace = "osm-system"

// ReleaseName is the Helm release of the mesh in its namespace. The
// chart's cluster-wide objects carry the namespace in their names, so one
// release per namespace is enough.
const ReleaseName = "osm"

// Streams are the command's input and outputs.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
	// Color forces colour on (true) or off (false); nil colours only when
	// Out is a terminal and NO_COLOR is unset.
	Color *bool
}

// globals are the flags every command shares.
type globals struct {
	streams    Streams
	kubeconfig string
	context    string
	namespace  string
	osmContext string
}

// New returns the root command.
func New(s Streams) *cobra.Command {
	g := &globals{streams: s}
	root := &cobra.Command{
		Use:   "osm",
		Short: "Install and operate Open Service Mesh",
		Long: `osm installs, upgrades and uninstalls Open Service Mesh on a Kubernetes
cluster with the Helm chart built into it, adds namespaces to the mesh, and
shows what the xds-edges serve each proxy.

It reaches the cluster of the current kubeconfig context, as kubectl does:
--kubeconfig (or $KUBECONFIG) and --context choose another. The proxy
commands reach the mesh's components through the Kubernetes API
(port-forwards to the pods of the chart's Services), or, against the dev
stack (make run), at the addresses of the context file it writes
(--osm-context or $OSM_CONTEXT). Either way they authenticate to the edges
with an operator certificate from the cert-authority, obtained with a token
of the ServiceAccount osm-operator (osm proxy --help).`,
		Example: `  # install the mesh into osm-system and wait for every component
  osm install

  # add a namespace: pods created in it from now on get the Envoy sidecar
  osm namespace add bookstore

  # every connected proxy, its edge and the generation it ACKed
  osm proxy list

  # against the dev stack
  OSM_CONTEXT=.osm-dev/osm-context.json osm proxy list

  # may bookbuyer GET /books-bought on bookstore? which policy allows it?
  osm policy check --from bookbuyer/bookbuyer --to bookstore/bookstore --path /books-bought --method GET

  # a tarball of the mesh's state for a bug report, without secrets
  osm bug-report

  # shell completion for bash (see osm completion --help for the others)
  source <(osm completion bash)`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&g.context, "context", "", "the kubeconfig context to use (default its current context)")
	pf.StringVarP(&g.namespace, "namespace", "n", DefaultNamespace, "the namespace of the mesh's control plane")
	pf.StringVar(&g.osmContext, "osm-context", "", "context file naming the components' addresses, which the dev stack writes (default $"+osmctx.EnvVar+"; unset: reach them through the Kubernetes API)")
	root.AddCommand(installCommand(g), upgradeCommand(g), uninstallCommand(g), namespaceCommand(g), proxyCommand(g))
	root.AddCommand(checkCommand(g))
	root.AddCommand(verifyCommand(g))
	root.AddCommand(policyCommand(g), versionCommand(g))
	root.AddCommand(convergenceCommand(g))
	root.AddCommand(bugReportCommand(g))
	addBuiltinExamples(root)
	return root
}

// addBuiltinExamples creates cobra's help and completion commands now, so
// that they too carry an example.
func addBuiltinExamples(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  osm help namespace add"
		case "completion":
			c.Example = "  source <(osm completion bash)\n  osm completion zsh > \"${fpath[1]}/_osm\""
			for _, sh := range c.Commands() {
				sh.Example = "  osm completion " + sh.Name() + " > osm-completion." + sh.Name()
			}
		}
	}
}

// configFlags are the kubeconfig flags as client-go's clientcmd reads them.
func (g *globals) configFlags() *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(false)
	f.KubeConfig, f.Context, f.Namespace = &g.kubeconfig, &g.context, &g.namespace
	return f
}

// clientset is a client of the cluster the flags name.
func (g *globals) clientset() (kubernetes.Interface, error) {
	rc, err := g.configFlags().ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (set --kubeconfig or --context)", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cs, nil
}

// helm is a Helm action configuration for the control-plane namespace,
// storing releases in Secrets as the helm CLI does; Helm's warnings go to
// stderr.
func (g *globals) helm() (*action.Configuration, error) {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(
		slog.NewTextHandler(g.streams.Err, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := cfg.Init(g.configFlags(), g.namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// colour returns the painter for Out.
func (g *globals) colour() painter { return g.colourFor(g.streams.Out) }

// colourFor returns the painter for w, one of the streams.
func (g *globals) colourFor(w io.Writer) painter {
	if g.streams.Color != nil {
		return painter(*g.streams.Color)
	}
	f, ok := w.(*os.File)
	return painter(ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == "")
}

// painter colours text when true.
type painter bool

func (p painter) wrap(code, s string) string {
	if !p {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p painter) green(s string) string  { return p.wrap("32", s) }
func (p painter) red(s string) string    { return p.wrap("31", s) }
func (p painter) yellow(s string) string { return p.wrap("33", s) }
