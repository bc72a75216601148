package command

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// rolloutPoll is how often --wait reads the components' state.
const rolloutPoll = time.Second

// component is the rollout state of one Deployment or StatefulSet.
type component struct {
	kind, name              string
	desired, ready, updated int32
	observed                bool // the controller has seen the latest spec
}

func (c component) key() string { return c.kind + " " + c.name }

func (c component) done() bool {
	return c.observed && c.ready >= c.desired && c.updated >= c.desired
}

func (c component) state() string {
	if !c.observed {
		return "waiting for its controller"
	}
	return fmt.Sprintf("%d/%d ready, %d/%d updated", c.ready, c.desired, c.updated, c.desired)
}

// components reads the Deployments and StatefulSets of release in ns.
func components(ctx context.Context, cs kubernetes.Interface, ns, release string) ([]component, error) {
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the Deployments of release %s in namespace %s: %w", release, ns, err)
	}
	sets, err := cs.AppsV1().StatefulSets(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the StatefulSets of release %s in namespace %s: %w", release, ns, err)
	}
	var out []component
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		out = append(out, component{kind: "Deployment", name: d.Name, desired: want,
			ready: d.Status.ReadyReplicas, updated: d.Status.UpdatedReplicas,
			observed: d.Status.ObservedGeneration >= d.Generation})
	}
	for _, s := range sets.Items {
		want := int32(1)
		if s.Spec.Replicas != nil {
			want = *s.Spec.Replicas
		}
		out = append(out, component{kind: "StatefulSet", name: s.Name, desired: want,
			ready: s.Status.ReadyReplicas, updated: s.Status.UpdatedReplicas,
			observed: s.Status.ObservedGeneration >= s.Generation})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, nil
}

// waitRollouts prints each component's state whenever it changes until
// every one is ready; after timeout it fails naming those that are not.
func waitRollouts(ctx context.Context, cs kubernetes.Interface, ns, release string, timeout time.Duration, out io.Writer, p painter) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(out, "Waiting up to %s for the components to be ready:\n", timeout)
	last := map[string]string{}
	tick := time.NewTicker(rolloutPoll)
	defer tick.Stop()
	var comps []component
	var lastErr error
	for {
		// A failed read is retried on the next tick; the timeout's error
		// gives the last one.
		if got, err := components(ctx, cs, ns, release); err != nil {
			lastErr = err
		} else {
			comps, lastErr = got, nil
		}
		pending := 0
		for _, c := range comps {
			mark := p.yellow("…")
			if c.done() {
				mark = p.green("✔")
			} else {
				pending++
			}
			if s := c.state(); last[c.key()] != s {
				last[c.key()] = s
				fmt.Fprintf(out, "  %s %s: %s\n", mark, c.key(), s)
			}
		}
		if lastErr == nil && pending == 0 {
			fmt.Fprintf(out, "%s all %d components are ready\n", p.green("✔"), len(comps))
			return nil
		}
		select {
		case <-ctx.Done():
			var late []string
			for _, c := range comps {
				if !c.done() {
					late = append(late, fmt.Sprintf("%s (%s)", c.key(), c.state()))
					fmt.Fprintf(out, "  %s %s: %s\n", p.red("✘"), c.key(), c.state())
				}
			}
			if len(comps) == 0 && lastErr != nil {
				return fmt.Errorf("after %s: %w", timeout, lastErr)
			}
			return fmt.Errorf("after %s, %d of %d components are not ready: %s; see kubectl get pods -n %s -l app.kubernetes.io/instance=%s and kubectl describe the objects named",
				timeout, len(late), len(comps), strings.Join(late, ", "), ns, release)
		case <-tick.C:
		}
	}
}
