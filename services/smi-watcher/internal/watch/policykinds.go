package watch

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic/dynamicinformer"

	"github.com/openservicemesh/osm/libs/osmpolicy"
)

// policySources builds an informer, across all namespaces, for each kind
// of OSM's policy API group (osmpolicy.Kinds) that the apiserver serves,
// read as unstructured and converted by the kind's osmpolicy parser. A new
// kind of the group needs only its entry in osmpolicy.Kinds (and the
// chart's RBAC).
//
// The kinds the apiserver does not serve (a cluster whose CRDs predate
// them: Helm does not upgrade crds/) are returned in missing and not
// watched, so that the watcher still syncs; installing the CRD then takes
// a watcher restart. An error other than "not served" is returned.
func policySources(c Clients, resync time.Duration) (dynamicinformer.DynamicSharedInformerFactory, []*source, []string, error) {
	served, err := servedResources(c.Kube.Discovery(), osmpolicy.GroupVersion.String())
	if err != nil {
		return nil, nil, nil, err
	}
	f := dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, resync)
	var srcs []*source
	var missing []string
	for _, k := range osmpolicy.Kinds() {
		if !served[k.Resource.Resource] {
			missing = append(missing, k.Resource.Resource+"."+k.Resource.Group)
			continue
		}
		parse := k.Parse
		srcs = append(srcs, &source{kind: k.Key, namespaced: true, informer: withTransform(f.ForResource(k.Resource).Informer()),
			build: func(o any) (proto.Message, bool) {
				u, ok := o.(*unstructured.Unstructured)
				if !ok {
					return nil, false
				}
				return parse(u), true
			}})
	}
	return f, srcs, missing, nil
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
