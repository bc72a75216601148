package watch

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic/dynamicinformer"

	"github.com/openservicemesh/osm/libs/osmpolicy"
)

// DefaultKindCheck is how often a watcher looks for policy kinds the
// apiserver did not serve when it started (their CRDs not installed yet).
const DefaultKindCheck = 5 * time.Second

// policySources builds an informer, across all namespaces, for each kind
// of OSM's policy API group (osmpolicy.Kinds) that the apiserver serves,
// read as unstructured and converted by the kind's osmpolicy parser. A new
// kind of the group needs only its entry in osmpolicy.Kinds (and the
// chart's RBAC).
//
// The kinds the apiserver does not serve (a cluster whose CRDs predate
// them: Helm does not upgrade crds/; or CRDs applied after the control
// plane) are returned in missing and not watched yet, so that the watcher
// still syncs; followKinds starts watching each once it is served. An
// error other than "not served" is returned.
func policySources(c Clients, resync time.Duration) (dynamicinformer.DynamicSharedInformerFactory, []*source, []osmpolicy.Kind, error) {
	served, err := servedResources(c.Kube.Discovery(), osmpolicy.GroupVersion.String())
	if err != nil {
		return nil, nil, nil, err
	}
	f := dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, resync)
	var srcs []*source
	var missing []osmpolicy.Kind
	for _, k := range osmpolicy.Kinds() {
		if !served[k.Resource.Resource] {
			missing = append(missing, k)
			continue
		}
		srcs = append(srcs, policySource(f, k))
	}
	return f, srcs, missing, nil
}

// policySource is the source of one policy kind, its informer made by f.
func policySource(f dynamicinformer.DynamicSharedInformerFactory, k osmpolicy.Kind) *source {
	parse := k.Parse
	return &source{kind: k.Key, namespaced: true, informer: withTransform(f.ForResource(k.Resource).Informer()),
		build: func(o any) (proto.Message, bool) {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				return nil, false
			}
			return parse(u), true
		}}
}

// resourceNames names kinds as resource.group, for logs.
func resourceNames(kinds []osmpolicy.Kind) []string {
	out := make([]string, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k.Resource.Resource+"."+k.Resource.Group)
	}
	return out
}

// followKinds asks the apiserver every interval whether it now serves the
// policy kinds that were missing when the watcher started, and starts
// watching each one that it serves: its objects are then published like
// those of any other kind (at once while leading; by the next takeover on
// a standby). It returns when every kind is watched or ctx ends. A
// discovery error is logged and retried at the next interval.
func (w *Watcher) followKinds(ctx context.Context, interval time.Duration) {
	missing := w.missing
	if len(missing) == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for len(missing) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		served, err := servedResources(w.o.Clients.Kube.Discovery(), osmpolicy.GroupVersion.String())
		if err != nil {
			w.log.WithError(err).Warn("could not ask the apiserver which policy kinds it serves; asking again later")
			continue
		}
		var still []osmpolicy.Kind
		for _, k := range missing {
			if !served[k.Resource.Resource] {
				still = append(still, k)
				continue
			}
			if err := w.addSource(ctx, policySource(w.facts.policy, k)); err != nil {
				w.log.WithError(err).WithField("resource", resourceNames([]osmpolicy.Kind{k})[0]).Warn("could not watch a newly served policy kind; trying again later")
				still = append(still, k)
				continue
			}
			w.log.WithField("resource", resourceNames([]osmpolicy.Kind{k})[0]).Info("policy kind now served by the apiserver: watching it")
		}
		missing = still
	}
}

// servedResources lists the resources the apiserver serves in groupVersion;
// none when it does not serve the group version.
func servedResources(d discovery.DiscoveryInterface, groupVersion string) (map[string]bool, error) {
	list, err := d.ServerResourcesForGroupVersion(groupVersion)
	if apierrors.IsNotFound(err) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("watch: discover %s: %w", groupVersion, err)
	}
	out := map[string]bool{}
	for _, r := range list.APIResources {
		out[r.Name] = true
	}
	return out, nil
}
