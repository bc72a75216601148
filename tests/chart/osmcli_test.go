package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/openservicemesh/osm/libs/osmctx"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// buildOSM builds the osm CLI (cli/osm, its own module) into dir.
func buildOSM(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "osm")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(stack.RepoRoot(), "cli", "osm")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the osm CLI: %v\n%s", err, out)
	}
	return bin
}

// osmRun is a run of the osm binary: its stdout, stderr and error.
type osmRun struct {
	out, errOut string
	err         error
}

// startOSM starts the osm binary with args against the harness cluster;
// the channel gets the run when it exits.
func startOSM(t *testing.T, bin string, args ...string) <-chan osmRun {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, append([]string{"--kubeconfig", cluster.KubeconfigPath()}, args...)...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1", osmctx.EnvVar+"=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan osmRun, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start osm %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		err := cmd.Wait()
		done <- osmRun{out.String(), errOut.String(), err}
	}()
	return done
}

// standIn plays the controllers' and the kubelet's parts for the
// release's workloads, which the harness (no kube-controller-manager's
// deployment, replicaset or statefulset controllers, no kubelet) leaves
// without pods: for each Deployment a ReplicaSet and its pod, for the
// StatefulSet its pod, each bound to a Node and Ready once the process
// playing it is ready, and the workloads' status as their controllers
// write it.
type standIn struct {
	t       *testing.T
	kubelet *osmkube.Kubelet
	// names are the pods' names by Deployment, fixed before the
	// processes start (their POD_NAME).
	names map[string]string
	// hashes are the ReplicaSets' pod-template-hash by Deployment.
	hashes map[string]string
	ips    int
}

func newStandIn(t *testing.T, node string) *standIn {
	s := &standIn{t: t, kubelet: cluster.Kubelet(node, "zone-a"), names: map[string]string{}, hashes: map[string]string{}}
	t.Cleanup(func() {
		// No kubelet confirms a graceful deletion: force the pods out.
		ctx := context.Background()
		cs := cluster.Clientset()
		zero := int64(0)
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err == nil {
			for _, p := range pods.Items {
				_ = cs.CoreV1().Pods(namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
		_ = cs.AppsV1().ReplicaSets(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName})
		_ = cs.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{})
	})
	return s
}

// podName is the name the ReplicaSet controller would give the
// Deployment's pod: <deployment>-<pod-template-hash>-<5 random>.
func (s *standIn) podName(deployment string) string {
	t := s.t
	if n, ok := s.names[deployment]; ok {
		return n
	}
	d, err := cluster.Clientset().AppsV1().Deployments(namespace).Get(t.Context(), deployment, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment %s: %v", deployment, err)
	}
	b, err := json.Marshal(d.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	h := fnv.New32a()
	h.Write(b)
	s.hashes[deployment] = utilrand.SafeEncodeString(fmt.Sprint(h.Sum32()))
	s.names[deployment] = deployment + "-" + s.hashes[deployment] + "-" + utilrand.String(5)
	return s.names[deployment]
}

// ready creates pod (owned by owner) and makes it Running and Ready.
func (s *standIn) ready(pod *corev1.Pod, owner metav1.OwnerReference) {
	t := s.t
	t.Helper()
	ctx := t.Context()
	pod.OwnerReferences = []metav1.OwnerReference{owner}
	p, err := cluster.Clientset().CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	s.ips++
	if _, err := s.kubelet.MakeReady(ctx, p, fmt.Sprintf("10.244.9.%d", 10+s.ips)); err != nil {
		t.Fatal(err)
	}
}

// runWorkloads gives every Deployment and StatefulSet of the release its
// Ready pods and its rolled-out status. Each must have one replica: one
// process plays each.
func (s *standIn) runWorkloads() {
	t := s.t
	t.Helper()
	ctx := t.Context()
	apps := cluster.Clientset().AppsV1()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName}
	deps, err := apps.Deployments(namespace).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Fatalf("Deployment %s has %v replicas; one process plays each component", d.Name, d.Spec.Replicas)
		}
		s.podName(d.Name)
		hash := s.hashes[d.Name]
		tmpl := *d.Spec.Template.DeepCopy()
		tmpl.Labels["pod-template-hash"] = hash
		selector := d.Spec.Selector.DeepCopy()
		if selector.MatchLabels == nil {
			selector.MatchLabels = map[string]string{}
		}
		selector.MatchLabels["pod-template-hash"] = hash
		rs, err := apps.ReplicaSets(namespace).Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Labels: tmpl.Labels,
				OwnerReferences: []metav1.OwnerReference{controllerRef("Deployment", d.Name, d.UID)}},
			Spec: appsv1.ReplicaSetSpec{Replicas: d.Spec.Replicas, Selector: selector, Template: tmpl},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create the ReplicaSet of Deployment %s: %v", d.Name, err)
		}
		s.ready(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: s.names[d.Name], Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
			controllerRef("ReplicaSet", rs.Name, rs.UID))
		rs.Status = appsv1.ReplicaSetStatus{Replicas: 1, FullyLabeledReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, ObservedGeneration: rs.Generation}
		if _, err := apps.ReplicaSets(namespace).UpdateStatus(ctx, rs, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
		if _, err := apps.Deployments(namespace).UpdateStatus(ctx, &d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sets, err := apps.StatefulSets(namespace).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range sets.Items {
		if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
			t.Fatalf("StatefulSet %s has %v replicas; one server plays it", ss.Name, ss.Spec.Replicas)
		}
		name := ss.Name + "-0"
		tmpl := ss.Spec.Template.DeepCopy()
		tmpl.Labels["statefulset.kubernetes.io/pod-name"] = name
		tmpl.Spec.Hostname, tmpl.Spec.Subdomain = name, ss.Spec.ServiceName
		// The claims of the volume claim templates, as the controller
		// names them (no PVC is made: the server's store is a directory of
		// the test, natsLayout's).
		for _, c := range ss.Spec.VolumeClaimTemplates {
			tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + name}}})
		}
		s.ready(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
			controllerRef("StatefulSet", ss.Name, ss.UID))
		ss.Status = appsv1.StatefulSetStatus{ObservedGeneration: ss.Generation, Replicas: 1, ReadyReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
		if _, err := apps.StatefulSets(namespace).UpdateStatus(ctx, &ss, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// controllerRef is the owner reference a controller sets on what it
// creates.
func controllerRef(kind, name string, uid types.UID) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: name, UID: uid, Controller: &yes, BlockOwnerDeletion: &yes}
}

// TestOSMInstallThenVerify is the CLI's install on the harness, the test
// playing the controllers and the kubelet: osm install (the built binary)
// runs its pre-install checks, installs the chart with the dev values and
// follows the rollouts; meanwhile, once Helm has deployed the release,
// every component runs as a process under its chart identity (the mapping
// of identity_test.go) and NATS as the rendered nats.conf, and each
// workload gets its pod, Ready once its process is. osm install then ends
// with every component ready and its next steps, and osm verify reports
// every check ✔ and exits 0: given the processes' addresses in a context
// file, as against the dev stack, and as on a cluster, through the
// apiserver's port-forwards, which the kubelet stand-in's streaming
// listener (portforward_test.go) takes to the processes.
func TestOSMInstallThenVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services and the CLI")
	}
	ctx := t.Context()
	start := time.Now()
	step := func(what string) { t.Logf("%s at %s", what, time.Since(start).Round(time.Millisecond)) }
	dir := t.TempDir()
	osm := buildOSM(t, dir)
	step("osm built")

	uninstallAtCleanup(t)
	s := newStandIn(t, "osm-cli-node")
	install := startOSM(t, osm, "install", "-f", filepath.Join(chartDir(t), "values-dev.yaml"), "--timeout", "3m")

	// Helm has created every object once the release is deployed.
	var early *osmRun
	err := stack.Eventually(ctx, 2*time.Minute, func() error {
		select {
		case r := <-install:
			early = &r
			return nil
		default:
		}
		r, err := action.NewGet(helmConfig(t)).Run(releaseName)
		if err != nil {
			return err
		}
		if st := r.(*releasev1.Release).Info.Status; st != rcommon.StatusDeployed {
			return fmt.Errorf("release %s is %s", releaseName, st)
		}
		return nil
	})
	if early != nil {
		t.Fatalf("osm install exited before the components ran: %v\n%s\n%s", early.err, early.out, early.errOut)
	}
	if err != nil {
		t.Fatalf("osm install did not deploy the release: %v", err)
	}
	step("release deployed")
	r, err := action.NewGet(helmConfig(t)).Run(releaseName)
	if err != nil {
		t.Fatal(err)
	}
	m := runChartMesh(t, r.(*releasev1.Release).Manifest, s.podName)
	step("components ready")
	s.runWorkloads()
	step("pods ready")

	var run osmRun
	select {
	case run = <-install:
	case <-time.After(time.Minute):
		t.Fatal("osm install still waits a minute after every workload is ready")
	}
	if run.err != nil {
		t.Fatalf("osm install: %v\n%s\n%s", run.err, run.out, run.errOut)
	}
	t.Logf("osm install:\n%s", run.out)
	for _, want := range []string{"Pre-install checks (as osm check):", "Status: ✔ all ", "✔ Installed release osm (revision 1",
		"✔ Deployment osm-xds-edge: 1/1 ready", "✔ StatefulSet osm-nats: 1/1 ready", "components are ready", "Next:\n  # check that the mesh works", "  osm verify\n"} {
		if !strings.Contains(run.out, want) {
			t.Errorf("osm install does not say %q", want)
		}
	}
	step("osm install done")

	// osm verify, at the processes' addresses.
	ctxFile := filepath.Join(dir, "osm-context.json")
	if err := osmctx.Write(ctxFile, &osmctx.File{
		Kubeconfig: cluster.KubeconfigPath(), Namespace: namespace, CARootsFile: filepath.Join(m.dir, "ca-roots.crt"),
		CertAuthority: osmctx.Endpoint{Addr: m.caAddr, ServerName: "osm-cert-authority." + namespace + ".svc"},
		Edges:         []osmctx.Endpoint{{Name: s.names["osm-xds-edge"], Addr: m.edgeDebugAddr}},
		Compilers:     []osmctx.Endpoint{{Name: s.names["osm-policy-compiler"], Addr: m.admins[stack.Compiler]}},
		NATSMonitors:  []osmctx.Endpoint{{Name: "osm-nats-0", Addr: m.natsMonitor}},
	}); err != nil {
		t.Fatal(err)
	}
	allPass := func(how, out string) {
		t.Helper()
		t.Logf("osm verify (%s):\n%s", how, out)
		for _, want := range []string{
			"✔ Deployment osm-cert-authority: 1/1 ready", "✔ StatefulSet osm-nats: 1/1 ready", "✔ no version skew",
			"✔ CRD trafficsplits.split.smi-spec.io is Established",
			"answers, JetStream on", "✔ bucket mesh-compiled: 1 replica(s)",
			"✔ the cert-authority issues the operator certificate",
			"✔ MutatingWebhookConfiguration osm-" + namespace + "-sidecar-injector webhook ",
			"✔ edge " + s.names["osm-xds-edge"] + " serves generation ",
			"✔ no policy is rejected", "Status: ✔ all ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("osm verify (%s) does not say %q", how, want)
			}
		}
		if strings.Contains(out, "✘") {
			t.Errorf("osm verify (%s) exited 0 with a ✘", how)
		}
	}
	var last osmRun
	// verify asks the cert-authority for an operator certificate on each
	// run, which it limits to 2 a second per caller: one run a second.
	paced := func(args ...string) func() error {
		return func() error {
			time.Sleep(time.Second)
			last = <-startOSM(t, osm, args...)
			return last.err
		}
	}
	err = stack.Eventually(ctx, 45*time.Second, paced("--osm-context", ctxFile, "verify"))
	if err != nil {
		t.Fatalf("osm verify (context file) not all ✔ within 45 s: %v\n%s\n%s", err, last.out, last.errOut)
	}
	allPass("context file", last.out)
	step("osm verify with the context file all ✔")

	// As on a cluster, before the stand-in serves the kubelet's streams:
	// the node has no address, and verify says the kubelet is what it
	// cannot reach.
	last = <-startOSM(t, osm, "verify")
	if last.err == nil || !strings.Contains(last.out, "the apiserver could not reach the kubelet of node osm-cli-node") {
		t.Errorf("osm verify through port-forwards with no kubelet: %v; want the kubelet named\n%s", last.err, last.out)
	}

	// As on a cluster: through the Kubernetes API, the port-forwards to
	// the pods going from the apiserver to the kubelet stand-in's
	// listener, and from there to the processes.
	kl := serveKubeletStreams(t, "osm-cli-node", podPorts(t, map[string]map[string]string{
		s.names["osm-cert-authority"]:  {"grpc": m.caAddr},
		s.names["osm-xds-edge"]:        {"debug": m.edgeDebugAddr},
		s.names["osm-policy-compiler"]: {"admin": m.admins[stack.Compiler]},
		"osm-nats-0":                   {"monitor": m.natsMonitor},
	}))
	err = stack.Eventually(ctx, 20*time.Second, paced("verify"))
	if err != nil {
		t.Fatalf("osm verify (port-forward) not all ✔ within 20 s: %v\n%s\n%s", err, last.out, last.errOut)
	}
	allPass("port-forward", last.out)
	served := strings.Join(kl.streamsServed(), " ")
	for _, want := range []string{s.names["osm-cert-authority"] + ":9443", s.names["osm-xds-edge"] + ":15129", "osm-nats-0:8222", s.names["osm-policy-compiler"] + ":"} {
		if !strings.Contains(served, namespace+"/"+want) {
			t.Errorf("verify did not port-forward to %s; the stand-in served %s", want, served)
		}
	}
	step("osm verify through port-forwards all ✔")

	// osm namespace add: a pod created in the namespace then goes through
	// the running injector's webhook and gets the sidecar; one created
	// before the add did not.
	const demo = "osm-cli-demo"
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demo}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), demo, metav1.DeleteOptions{}) })
	if _, err := cs.CoreV1().ServiceAccounts(demo).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod := func(name string) *corev1.Pod {
		t.Helper()
		p, err := cs.CoreV1().Pods(demo).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "app"}},
			Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", demo, name, err)
		}
		return p
	}
	if p := createPod("before-add"); hasContainer(p, "envoy") {
		t.Errorf("pod %s/before-add got the sidecar before osm namespace add: containers %v", demo, containerNames(p))
	}
	add := <-startOSM(t, osm, "namespace", "add", demo)
	if add.err != nil || !strings.Contains(add.out, "namespace "+demo+" is in mesh osm (sidecar injection enabled)") {
		t.Fatalf("osm namespace add %s: %v\n%s\n%s", demo, add.err, add.out, add.errOut)
	}
	if p := createPod("after-add"); !hasContainer(p, "envoy") {
		t.Errorf("pod %s/after-add was not injected after osm namespace add: containers %v", demo, containerNames(p))
	}
	step("osm namespace add, then a pod injected")
}
