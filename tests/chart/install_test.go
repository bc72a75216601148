package chart

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	osmkube "github.com/openservicemesh/osm/tests/kube"
)

// helmConfig is a Helm action configuration against the harness cluster,
// with releases stored in Secrets, as the CLI does.
func helmConfig(t *testing.T) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	kc, ns := cluster.KubeconfigPath(), namespace
	flags.KubeConfig, flags.Namespace = &kc, &ns
	cfg := action.NewConfiguration(quiet())
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}
	return cfg
}

// live reads objects from the cluster through the discovery REST mapper.
type live struct {
	mapper meta.RESTMapper
	dyn    dynamic.Interface
}

func newLive(t *testing.T) *live {
	t.Helper()
	dc := memory.NewMemCacheClient(cluster.Clientset().Discovery())
	return &live{mapper: restmapper.NewDeferredDiscoveryRESTMapper(dc), dyn: cluster.Dynamic()}
}

// resource is the dynamic client of a rendered object's type.
func (l *live) resource(o object) (dynamic.ResourceInterface, error) {
	gvk := (&unstructured.Unstructured{Object: o.Body}).GroupVersionKind()
	m, err := l.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Key, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return l.dyn.Resource(m.Resource).Namespace(namespace), nil
	}
	return l.dyn.Resource(m.Resource), nil
}

// get reads the live object of a rendered one; nil when it is not found.
func (l *live) get(ctx context.Context, o object) (*unstructured.Unstructured, error) {
	r, err := l.resource(o)
	if err != nil {
		return nil, err
	}
	got, err := r.Get(ctx, (&unstructured.Unstructured{Object: o.Body}).GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return got, err
}

// TestInstallUpgradeRollbackUninstall installs the chart into the harness
// cluster, where the apiserver accepts every object and each
// ServiceAccount gets exactly its component's rights; upgrades it with the
// xds-edge's tag changed, which changes the xds-edge's objects only, keeps
// the generated credentials and the caBundle the injector wrote; adds an
// edge canary without rewriting the stable edges; rolls back to the first
// revision; and uninstalls, which leaves nothing but the CRDs.
func TestInstallUpgradeRollbackUninstall(t *testing.T) {
	ctx := t.Context()
	cfg := helmConfig(t)
	l := newLive(t)
	chrt := loadChart(t)

	start := time.Now()
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = releaseName, namespace, true
	in.WaitStrategy = kube.HookOnlyStrategy // there is no kubelet: nothing would become ready
	r, err := in.RunWithContext(ctx, chrt, valuesFile(t, ""))
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	rel1 := r.(*releasev1.Release)
	objs1 := byKey(t, objects(t, rel1.Manifest))
	t.Logf("installed %d objects and %d CRDs in %s", len(objs1), len(chrt.CRDObjects()), time.Since(start).Round(time.Millisecond))
	for _, o := range objs1 {
		got, err := l.get(ctx, o)
		if err != nil || got == nil {
			t.Fatalf("%s not in the cluster after install: %v", o.Key, err)
		}
	}

	// Each ServiceAccount may make the calls of its component, and not
	// those nearby.
	checkRBAC(ctx, t)

	// The injector sets the webhook's caBundle with an Update.
	mwcs := cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwcName := "osm-" + namespace + "-sidecar-injector"
	bundle := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	injectorWrites(t, mwcs, mwcName, bundle)
	secretsBefore := generatedSecrets(t)
	rvBefore := resourceVersions(ctx, t, l, objs1)

	// Upgrade: the xds-edge's tag alone changes.
	up := action.NewUpgrade(cfg)
	up.Namespace = namespace
	up.WaitStrategy = kube.HookOnlyStrategy
	r, err = up.RunWithContext(ctx, releaseName, chrt, set(t, valuesFile(t, ""), "xdsEdge.image.tag", "v9.9.9-canary"))
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	rel2 := r.(*releasev1.Release)
	objs2 := byKey(t, objects(t, rel2.Manifest))
	changed := changedObjects(t, objs1, objs2)
	if len(changed) == 0 {
		t.Fatal("the upgrade changed no object")
	}
	for _, k := range changed {
		if c := componentOf(objs2[k]); c != "xds-edge" {
			t.Errorf("the upgrade changed %s, of %q", k, c)
		}
	}
	if img := deploymentImage(t, "osm-xds-edge"); !strings.HasSuffix(img, ":v9.9.9-canary") {
		t.Errorf("xds-edge runs %s after the upgrade", img)
	}
	// Live: no object of another component was written (server-side apply
	// of an unchanged object keeps its resourceVersion).
	rvAfter := resourceVersions(ctx, t, l, objs2)
	for k, rv := range rvBefore {
		if componentOf(objs1[k]) != "xds-edge" && rvAfter[k] != rv {
			t.Errorf("%s was written by the upgrade (resourceVersion %s -> %s)", k, rv, rvAfter[k])
		}
	}
	if got := generatedSecrets(t); !reflect.DeepEqual(got, secretsBefore) {
		t.Error("the upgrade changed the generated NATS credentials; lookup must keep them")
	}
	if mwc, err := mwcs.Get(ctx, mwcName, metav1.GetOptions{}); err != nil || string(mwc.Webhooks[0].ClientConfig.CABundle) != string(bundle) {
		t.Errorf("the upgrade lost the caBundle the injector wrote (err %v)", err)
	}

	// Upgrade: an edge canary at another tag; the stable edges are not
	// rewritten.
	stableRV := rvAfter["Deployment/osm-system/osm-xds-edge"]
	r, err = up.RunWithContext(ctx, releaseName, chrt, set(t, canaryValues(t, "v0.2.0-rc1"), "xdsEdge.image.tag", "v9.9.9-canary"))
	if err != nil {
		t.Fatalf("upgrade with a canary: %v", err)
	}
	objs3 := byKey(t, objects(t, r.(*releasev1.Release).Manifest))
	if changed := changedObjects(t, objs2, objs3); !slices.Equal(changed, []string{"Deployment/osm-system/osm-xds-edge-canary"}) {
		t.Errorf("the canary upgrade changed %v", changed)
	}
	if img := deploymentImage(t, "osm-xds-edge-canary"); !strings.HasSuffix(img, ":v0.2.0-rc1") {
		t.Errorf("the canary runs %s", img)
	}
	if got := resourceVersions(ctx, t, l, objs3)["Deployment/osm-system/osm-xds-edge"]; got != stableRV {
		t.Errorf("the canary upgrade rewrote the stable edges (resourceVersion %s -> %s)", stableRV, got)
	}

	// Rollback to the first revision.
	rb := action.NewRollback(cfg)
	rb.Version = 1
	rb.WaitStrategy = kube.HookOnlyStrategy
	if err := rb.Run(releaseName); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if img := deploymentImage(t, "osm-xds-edge"); strings.HasSuffix(img, ":v9.9.9-canary") {
		t.Errorf("xds-edge still runs %s after the rollback", img)
	}
	if _, err := cluster.Clientset().AppsV1().Deployments(namespace).Get(ctx, "osm-xds-edge-canary", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the canary is still there after the rollback (%v)", err)
	}
	if got := generatedSecrets(t); !reflect.DeepEqual(got, secretsBefore) {
		t.Error("the rollback changed the generated NATS credentials")
	}

	// Uninstall: nothing is left but the CRDs.
	un := action.NewUninstall(cfg)
	un.WaitStrategy = kube.HookOnlyStrategy
	if _, err := un.Run(releaseName); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, o := range objs1 {
			if got, err := l.get(ctx, o); err != nil || got != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		for _, o := range objs1 {
			if got, _ := l.get(ctx, o); got != nil {
				t.Errorf("%s is left after uninstall", o.Key)
			}
		}
	}
	if left := leftInNamespace(ctx, t); len(left) > 0 {
		t.Errorf("left in %s after uninstall: %v", namespace, left)
	}
	for _, crd := range chrt.CRDObjects() {
		name := crdName(t, crd.File.Data)
		if _, err := l.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
			Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("CRD %s gone after uninstall (Helm keeps CRDs): %v", name, err)
		}
	}
}

// injectorWrites sets the webhook's caBundle as the injector's own field
// manager. (The injector's webhookconfig.Ensure today also replaces the
// configuration's labels with app.kubernetes.io/managed-by=osm-injector,
// which Helm sets to Helm: the next `helm upgrade` then fails with a
// server-side apply conflict on that label. The injector must leave the
// labels of an existing configuration alone; see the chart's README.)
func injectorWrites(t *testing.T, mwcs interface {
	Get(context.Context, string, metav1.GetOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, error)
	Update(context.Context, *admissionregistrationv1.MutatingWebhookConfiguration, metav1.UpdateOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, error)
}, name string, bundle []byte) {
	t.Helper()
	cur, err := mwcs.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's webhook configuration: %v", err)
	}
	cur.Webhooks[0].ClientConfig.CABundle = bundle
	if _, err := mwcs.Update(t.Context(), cur, metav1.UpdateOptions{FieldManager: "injector-webhook"}); err != nil {
		t.Fatalf("update the webhook configuration's caBundle as the injector does: %v", err)
	}
}

// generatedSecrets returns the data of the chart's generated Secrets.
func generatedSecrets(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	l, err := cluster.Clientset().CoreV1().Secrets(namespace).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=nats"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]byte{}
	for _, s := range l.Items {
		out[s.Name] = s.Data
	}
	if len(out) < 3 {
		t.Fatalf("found %d generated NATS Secrets", len(out))
	}
	return out
}

// resourceVersions are the live resourceVersions of objs.
func resourceVersions(ctx context.Context, t *testing.T, l *live, objs map[string]object) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, o := range objs {
		got, err := l.get(ctx, o)
		if err != nil || got == nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = got.GetResourceVersion()
	}
	return out
}

// deploymentImage is the image of a Deployment's first container.
func deploymentImage(t *testing.T, name string) string {
	t.Helper()
	d, err := cluster.Clientset().AppsV1().Deployments(namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// leftInNamespace lists every object of every listable namespaced type in
// the release namespace, but those Kubernetes itself keeps in every
// namespace (the default ServiceAccount, the kube-root-ca.crt ConfigMap)
// and Events.
func leftInNamespace(ctx context.Context, t *testing.T) []string {
	t.Helper()
	lists, err := cluster.Clientset().Discovery().ServerPreferredNamespacedResources()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, list := range lists {
		gv, _ := schema.ParseGroupVersion(list.GroupVersion)
		for _, res := range list.APIResources {
			if !slices.Contains(res.Verbs, "list") || res.Name == "events" {
				continue
			}
			items, err := cluster.Dynamic().Resource(gv.WithResource(res.Name)).Namespace(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("list %s: %v", res.Name, err)
			}
			for _, it := range items.Items {
				key := res.Name + "/" + it.GetName()
				if key == "serviceaccounts/default" || key == "configmaps/kube-root-ca.crt" {
					continue
				}
				left = append(left, key)
			}
		}
	}
	return left
}

// crdName is the metadata.name of a CRD file.
func crdName(t *testing.T, data []byte) string {
	t.Helper()
	objs := objects(t, string(data))
	if len(objs) != 1 {
		t.Fatalf("a CRD file holds %d objects", len(objs))
	}
	md, _ := objs[0].Body["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	return name
}

// TestServerAcceptsEveryValuesFile: the apiserver accepts every object the
// dev, large and Vault values render: each is applied with a server-side
// dry run, which validates and admits it without storing it. (Helm's own
// server dry run stops before sending the objects.)
func TestServerAcceptsEveryValuesFile(t *testing.T) {
	ctx := t.Context()
	dir, err := osmkube.CRDDir()
	if err == nil {
		err = cluster.ApplyCRDs(ctx, dir)
	}
	if err != nil {
		t.Fatalf("the chart's CRDs: %v", err)
	}
	nss := cluster.Clientset().CoreV1().Namespaces()
	if _, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	l := newLive(t)
	for _, vf := range valuesFiles[1:] {
		t.Run(name(vf), func(t *testing.T) {
			r, err := render(t, valuesFile(t, vf))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objects(t, r.Manifest) {
				res, err := l.resource(o)
				if err != nil {
					t.Fatal(err)
				}
				u := &unstructured.Unstructured{Object: o.Body}
				if _, err := res.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "osm-chart-test", Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("%s of %s refused: %v", o.Key, vf, err)
				}
			}
		})
	}
}
