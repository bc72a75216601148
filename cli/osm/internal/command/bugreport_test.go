package command

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/xdstest"
	osmkube "github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// TestBugReport runs osm bug-report against the mesh's services as
// processes on the harness cluster (through a context file, as against the
// dev stack), with a connected proxy, a TrafficTarget the compiler rejects,
// and secrets seeded where a careless report would pick them up: a PEM
// private key and the operator's token in an Event's message, a base64 DER
// key, a base64 PEM key and a token in a policy's annotations, the NATS
// password and the CA's bootstrap token in a Deployment's environment,
// Secrets in the mesh's namespaces. The tarball holds every part with
// real content (a policy's rejection, the proxy's row, a metrics line,
// the Events) and, in every byte, no private key (PEM, base64 of PEM or
// DER, of the CA's root, the proxy's served key or the seeded one), no
// JWT, no password. With the CA down a second report is still written,
// errors.txt naming what failed.
func TestBugReport(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	start := time.Now()
	tm := startTestMesh(t, testMeshOptions{name: "bugtest", smi: true, pods: []testPod{{"bug-buyer-1", "bookbuyer", "bug-uuid-buyer", "10.244.7.10"}}})
	t.Logf("mesh ready after %s", time.Since(start).Round(time.Millisecond))
	buyer, _ := tm.proxy(t, "bookbuyer", "bug-uuid-buyer", false)

	// The secrets a report must not carry.
	seedKey, seedKeyPEM := testKey(t)
	seedDER, err := x509.MarshalECPrivateKey(seedKey)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(tm.cpNS).CreateToken(ctx, access.OperatorServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{access.TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	operatorToken := tr.Status.Token
	natsPassword := tm.NATS().Password(bus.RoleEdge)

	// A TrafficTarget the compiler rejects (its route is missing), with
	// annotations that hold secrets.
	tt := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "missing-route", "annotations": map[string]any{
			"bugtest.example/note":          "debugged with " + operatorToken,
			"bugtest.example/blob":          base64.StdEncoding.EncodeToString(seedDER),
			"bugtest.example/pem-b64":       base64.StdEncoding.EncodeToString(seedKeyPEM),
			"bugtest.example/nats-password": natsPassword,
		}},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": tm.appNS},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": tm.appNS}},
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "no-such-routes", "matches": []any{"buy-a-book"}}}}}}
	if _, err := cluster.Dynamic().Resource(osmkube.TrafficTargets).Namespace(tm.appNS).Create(ctx, tt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An Event whose message holds a PEM key and the token, as a careless
	// controller could write.
	if _, err := cs.CoreV1().Events(tm.appNS).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "leaky-"},
		InvolvedObject: corev1.ObjectReference{APIVersion: "access.smi-spec.io/v1alpha3", Kind: "TrafficTarget", Namespace: tm.appNS, Name: "missing-route"},
		Type:           corev1.EventTypeNormal, Reason: "Leaked", Source: corev1.EventSource{Component: "bugtest-leaky"},
		Message:        "loaded key\n" + string(seedKeyPEM) + "with Authorization: Bearer " + operatorToken + " and password=" + natsPassword,
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Secrets: an app's TLS key, and a bootstrap Secret in the control plane.
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer-tls", Namespace: tm.appNS}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": otherRootPEM(t), "tls.key": seedKeyPEM}},
		{ObjectMeta: metav1.ObjectMeta{Name: "osm-bootstrap", Namespace: tm.cpNS}, Data: map[string][]byte{"token": []byte(operatorToken), "key.der": seedDER}},
	} {
		if _, err := cs.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A control-plane Deployment with secrets in its environment.
	labels := map[string]string{labelInstance: ReleaseName, partOfLabel: "osm", labelComponent: "bugtest-env", labelVersion: "0.1.0"}
	if _, err := cs.AppsV1().Deployments(tm.cpNS).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "osm-bugtest-env", Labels: labels},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "env", Image: "osm-bugtest:0.1.0", Env: []corev1.EnvVar{
				{Name: "OSM_NATS_PASSWORD", Value: natsPassword}, {Name: "OSM_DEV_BOOTSTRAP_TOKEN", Value: tm.Secrets()[0]},
				{Name: "OSM_LOG_LEVEL", Value: "debug"}}}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Wait for the rejection and for the proxy to be synced.
	xdstest.WaitFor(t, "the smi-watcher's rejection of missing-route", func() bool {
		evs, err := cs.CoreV1().Events(tm.appNS).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
		return err == nil && len(newestRejections(evs.Items)) > 0
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := tm.osm(t, "proxy", "list", "-o", "json")
		var rows []proxyRow
		if err == nil && json.Unmarshal([]byte(out), &rows) == nil && len(rows) == 1 && rows[0].Synced && rows[0].Pod == tm.appNS+"/bug-buyer-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bookbuyer's proxy not listed synced within 30 s: %v\n%s", err, out)
		}
		time.Sleep(time.Second) // each run bootstraps at the CA, which allows 2 a second
	}
	t.Logf("seeded after %s", time.Since(start).Round(time.Millisecond))

	file := filepath.Join(tm.dir, "report.tar.gz")
	out, err := tm.osm(t, "bug-report", "--mesh-name", tm.mesh, "-f", file)
	if err != nil {
		t.Fatalf("bug-report: %v\n%s", err, out)
	}
	for _, want := range []string{"wrote " + file + ": ", "! verify: ", "redacted: ", "Check it before you share it"} {
		if !strings.Contains(out, want) {
			t.Errorf("bug-report's summary lacks %q:\n%s", want, out)
		}
	}
	raw, files := readReport(t, file)
	t.Logf("bug-report written after %s: %d files, %d bytes", time.Since(start).Round(time.Millisecond), len(files), len(raw))

	// Every part, with real content.
	for name, wants := range map[string][]string{
		"README.txt":    {"Control-plane namespace: " + tm.cpNS, "Mesh: " + tm.mesh, "verify.txt", "Redactions: ", "jwt ", "pem-private-key ", "encoded-private-key ", "secret-field "},
		"errors.txt":    {"Every part was collected."},
		"versions.yaml": {"client:", "chartAppVersion:", "component: bugtest-env", "running:", "endpoint: bugtest-policy-compiler"},
		"verify.txt": {"✘ TrafficTarget " + tm.appNS + "/missing-route is rejected: ", "edge bugtest-edge-0 serves generation ",
			"✘ Deployment osm-bugtest-env: ", "Status: ✘ "},
		"namespaces.txt":                                      {tm.appNS},
		"control-plane/deployments.yaml":                      {"OSM_NATS_PASSWORD", "OSM_LOG_LEVEL", "value: debug"},
		"control-plane/secrets.txt":                           {"osm-bootstrap", "key.der,token"},
		"policies/traffictargets.access.smi-spec.io.yaml":     {"name: missing-route", "no-such-routes", "bugtest.example/note"},
		"policies/meshconfigs.config.openservicemesh.io.yaml": {"name: " + tm.mcName, "enablePermissiveTrafficPolicyMode: false"},
		"policies/status.txt":                                 {"TrafficTarget   " + tm.appNS + "/missing-route", "rejected"},
		"policies/events.yaml":                                {"osm-smi-watcher", "Leaked", redactedKey},
		"events/" + tm.appNS + ".yaml":                        {"object: TrafficTarget " + tm.appNS + "/missing-route", redactedKey, redactedToken},
		"metrics/bugtest-policy-compiler.prom":                {"osm_compiler_generation "},
		"metrics/bugtest-xds-edge.prom":                       {"osm_xds_"},
		"metrics/bugtest-nats-0.jsz.json":                     {"KV_mesh-compiled"},
		"metrics/bugtest-nats-0.varz.json":                    {"server_id"},
		"proxies/proxies.txt":                                 {tm.appNS + "/bug-buyer-1", tm.appNS + "/bookbuyer", "bugtest-edge-0"},
		"proxies/bugtest-edge-0/proxies.json":                 {`"node_id": "bug-uuid-buyer"`},
		"proxies/bugtest-edge-0/edge.json":                    {`"edge": "bugtest-edge-0"`},
		"proxies/bugtest-edge-0/generations.json":             {`"generations"`},
	} {
		got, ok := files[name]
		if !ok {
			t.Errorf("the report has no %s; it has %v", name, sortedKeys(lens(files)))
			continue
		}
		for _, w := range wants {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%.3000s", name, w, got)
			}
		}
	}
	// The redactions leave the YAML and JSON files parseable.
	for name, data := range files {
		var v any
		switch {
		case strings.HasSuffix(name, ".yaml") && yaml.Unmarshal([]byte(data), &v) != nil,
			strings.HasSuffix(name, ".json") && !json.Valid([]byte(data)):
			t.Errorf("%s does not parse:\n%.1000s", name, data)
		}
	}
	if strings.Contains(files["control-plane/secrets.txt"], base64.StdEncoding.EncodeToString(seedDER)) {
		t.Error("secrets.txt holds a Secret's data")
	}

	// No secret in any byte.
	forbidden := map[string]string{"a PEM key header": "PRIVATE KEY", "the operator's token": operatorToken, "the NATS password": natsPassword}
	for i, s := range tm.Secrets() {
		forbidden["the stack's secret "+string(rune('0'+i))] = s
	}
	addKey := func(what string, keyPEM []byte) {
		blk, _ := pem.Decode(keyPEM)
		if blk == nil {
			t.Fatalf("%s: no PEM", what)
		}
		forbidden[what+" (PEM)"] = string(keyPEM)
		forbidden[what+" (a line of its PEM)"] = strings.Split(string(keyPEM), "\n")[1]
		forbidden[what+" (base64 of PEM)"] = base64.StdEncoding.EncodeToString(keyPEM)
		forbidden[what+" (base64 of DER)"] = base64.StdEncoding.EncodeToString(blk.Bytes)
		forbidden[what+" (base64url of DER)"] = base64.RawURLEncoding.EncodeToString(blk.Bytes)
		forbidden[what+" (DER)"] = string(blk.Bytes)
	}
	addKey("the seeded key", seedKeyPEM)
	addKey("the seeded key as SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: seedDER}))
	addKey("the proxy's served key", servedKey(t, buyer))
	secrets, err := cs.CoreV1().Secrets(tm.cpNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := 0
	for _, s := range secrets.Items {
		if k := s.Data["ca.key"]; len(k) > 0 {
			addKey("the CA's root key in Secret "+s.Name, k)
			roots++
		}
	}
	if roots == 0 {
		t.Fatalf("no root Secret of the CA in %s: the test cannot check its key", tm.cpNS)
	}
	jwt := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.`)
	scan := func(what, data string) {
		for form, s := range forbidden {
			if s != "" && strings.Contains(data, s) {
				t.Errorf("%s holds %s", what, form)
			}
		}
		if m := jwt.FindString(data); m != "" {
			t.Errorf("%s holds a JWT: %.40s...", what, m)
		}
	}
	for name, data := range files {
		scan(name, data)
	}
	scan("the tarball's stream", raw)
	if t.Failed() {
		return
	}

	// The same file again is refused; with the CA down, a report is still
	// written, and says what it lacks.
	if _, err := tm.osm(t, "bug-report", "--mesh-name", tm.mesh, "-f", file); err == nil || !strings.Contains(err.Error(), file+" exists") {
		t.Errorf("bug-report onto an existing file: %v; want an error naming it", err)
	}
	if err := tm.Stop(stack.CertAuthority); err != nil {
		t.Fatal(err)
	}
	file2 := filepath.Join(tm.dir, "report-ca-down.tar.gz")
	out, err = tm.osm(t, "bug-report", "--mesh-name", tm.mesh, "--output", file2)
	if err != nil {
		t.Fatalf("bug-report with the CA down: %v\n%s", err, out)
	}
	if !strings.Contains(out, "! not collected (errors.txt says why): ") || !strings.Contains(out, "proxies") {
		t.Errorf("bug-report with the CA down does not say proxies are missing:\n%s", out)
	}
	_, files = readReport(t, file2)
	for name, want := range map[string]string{
		"errors.txt":                           "proxies:",
		"verify.txt":                           "✘ the cert-authority does not issue the operator certificate",
		"metrics/bugtest-policy-compiler.prom": "osm_compiler_generation ",
		"policies/status.txt":                  "missing-route",
	} {
		if !strings.Contains(files[name], want) {
			t.Errorf("with the CA down, %s lacks %q:\n%.2000s", name, want, files[name])
		}
	}
	t.Logf("done after %s", time.Since(start).Round(time.Millisecond))
}

// readReport returns a bug-report's decompressed stream and its files by
// name under the top directory, checking that every file is under it.
func readReport(t *testing.T, path string) (string, map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v; want 0600", path, st.Mode().Perm())
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(raw))
	top := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		dir, name, _ := strings.Cut(h.Name, "/")
		if top == "" {
			top = dir
		}
		if dir != top || !strings.HasPrefix(top, "osm-bug-report-") {
			t.Errorf("%s is not under the report's directory %s", h.Name, top)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	return string(raw), files
}

func lens(files map[string]string) map[string]int {
	out := map[string]int{}
	for k, v := range files {
		out[k] = len(v)
	}
	return out
}

// testKey is a new ECDSA key and its PKCS #8 PEM.
func testKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TestBugReportScrub: each rule on its own, what it leaves, and its count.
func TestBugReportScrub(t *testing.T) {
	key, keyPEM := testKey(t)
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"
	for _, c := range []struct {
		name, in, want string
		rule           string
	}{
		{"a PEM key", "key:\n" + string(keyPEM) + "end", "key:\n" + redactedKey + "\nend", rulePEMKey},
		{"a PEM key escaped in JSON", `{"msg": "` + strings.ReplaceAll(string(keyPEM), "\n", `\n`) + `"}`, `{"msg": "` + redactedKey + `\n"}`, rulePEMKey},
		{"a cut PEM key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE", redactedKey, rulePEMKey},
		{"base64 of DER", "blob: " + base64.StdEncoding.EncodeToString(sec1), "blob: " + redactedKey, ruleBase64Key},
		{"base64 of PEM", "x " + base64.StdEncoding.EncodeToString(keyPEM) + " y", "x " + redactedKey + " y", ruleBase64Key},
		{"a JWT", "token " + jwt + " used", "token " + redactedToken + " used", ruleJWT},
		{"a JSON password", `{"password": "hunter2", "user": "edge"}`, `{"password": "REDACTED", "user": "edge"}`, ruleField},
		{"a JSON env var", `{"name": "OSM_NATS_PASSWORD", "value": "hunter2"}`, `{"name": "OSM_NATS_PASSWORD", "value": "REDACTED"}`, ruleField},
		{"a YAML env var", "- name: OSM_NATS_PASSWORD\n  value: hunter2\n- name: LEVEL\n  value: debug", "- name: OSM_NATS_PASSWORD\n  value: REDACTED\n- name: LEVEL\n  value: debug", ruleField},
		{"a YAML token block", "auth:\n  token: |\n    abc\n    def\n  user: x", "auth:\n  token: REDACTED\n  user: x", ruleField},
		{"name=value in a message", "login failed password=hunter2 for edge", "login failed password=REDACTED for edge", ruleField},
		{"a URL's password", "nats://edge:hunter2@nats:4222", "nats://edge:REDACTED@nats:4222", ruleURL},
		{"an Authorization header", "Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic REDACTED", ruleAuth},
		{"a bearer JWT", "Authorization: Bearer " + jwt, "Authorization: Bearer " + redactedToken, ruleJWT},
		{"harmless values stay", "automountServiceAccountToken: false\nsecretName: osm-ca-root\ntokenFile: /var/run/token", "automountServiceAccountToken: false\nsecretName: osm-ca-root\ntokenFile: /var/run/token", ""},
		{"a fingerprint stays", "sha256 " + strings.Repeat("ab01", 16), "sha256 " + strings.Repeat("ab01", 16), ""},
	} {
		s := newScrubber()
		got := string(s.text([]byte(c.in)))
		if got != c.want {
			t.Errorf("%s: scrubbed\n%s\nwant\n%s", c.name, got, c.want)
		}
		if c.rule != "" && s.counts[c.rule] == 0 {
			t.Errorf("%s: counts %v; want %s counted", c.name, s.counts, c.rule)
		}
		if c.rule == "" && len(s.counts) > 0 {
			t.Errorf("%s: counts %v; want none", c.name, s.counts)
		}
	}

	// An object: managedFields out, fields and env vars named like a
	// secret redacted.
	obj := map[string]any{
		"metadata": map[string]any{"name": "x", "managedFields": []any{map[string]any{"manager": "kubectl"}},
			"annotations": map[string]any{"example.com/api-key": "k-123", "kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "fine"}},
		"spec": map[string]any{"containers": []any{map[string]any{"env": []any{
			map[string]any{"name": "OSM_NATS_PASSWORD", "value": "hunter2"}, map[string]any{"name": "LEVEL", "value": "debug"}}}}},
	}
	s := newScrubber()
	s.scrubObject(obj)
	md := obj["metadata"].(map[string]any)
	ann := md["annotations"].(map[string]any)
	env := obj["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"].([]any)
	if md["managedFields"] != nil || ann["kubectl.kubernetes.io/last-applied-configuration"] != nil || ann["example.com/api-key"] != redacted || ann["note"] != "fine" ||
		env[0].(map[string]any)["value"] != redacted || env[1].(map[string]any)["value"] != "debug" || s.counts[ruleField] != 2 {
		t.Errorf("scrubObject: %v, counts %v", obj, s.counts)
	}
}

// TestBugReportSummary: what bug-report prints, golden, from fixed
// parts.
func TestBugReportSummary(t *testing.T) {
	r := newBugReport(time.Date(2026, 12, 4, 22, 30, 0, 0, time.UTC))
	r.add("verify.txt", []byte("✔ fine\n"))
	r.add("events/app.yaml", []byte("message: token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln password=hunter2\n"))
	r.verifyChecks, r.verifyFailed = 25, 2
	r.fail("metrics/osm-nats-0.varz.json", errors.New("NATS server osm-nats-0: connection refused"))
	var b bytes.Buffer
	r.printSummary(&b, "/tmp/osm-bug-report-20261204T223000Z.tar.gz", 23456, painter(false))
	golden(t, "bug-report-summary.txt", b.String())
	if r.dir != "osm-bug-report-20261204T223000Z" {
		t.Errorf("the report's directory is %s", r.dir)
	}
}

// TestBugReportFlags: --output completes tar.gz files; --help explains the
// layout, the scrub and that there is no -o format.
func TestBugReportFlags(t *testing.T) {
	out := mustOSM(t, "__complete", "bug-report", "--output", "")
	if !strings.Contains(out, "tar.gz\n") || !strings.Contains(out, ":8\n") { // cobra.ShellCompDirectiveFilterFileExt
		t.Errorf("completion of --output does not filter tar.gz files:\n%s", out)
	}
	help := mustOSM(t, "bug-report", "--help")
	for _, want := range []string{"errors.txt", "no -o output format", "osm bug-report -n osm-prod --output", "-f, --output string"} {
		if !strings.Contains(help, want) {
			t.Errorf("osm bug-report --help lacks %q:\n%s", want, help)
		}
	}
}

// testBugReportInstalled runs osm bug-report on the chart as osm install
// created it in testNamespace, through the Kubernetes API (no context
// file): the mesh's name comes from the release, and with no pod running
// (no kubelet) the parts that need one are named in errors.txt while the
// others are written.
func testBugReportInstalled(t *testing.T) {
	file := filepath.Join(t.TempDir(), "installed.tar.gz")
	out := mustOSM(t, "bug-report", "-n", testNamespace, "-f", file)
	if !strings.Contains(out, "! not collected (errors.txt says why): ") {
		t.Errorf("bug-report with no pod running names nothing it lacks:\n%s", out)
	}
	raw, files := readReport(t, file)
	for name, wants := range map[string][]string{
		"README.txt":                     {"Control-plane namespace: " + testNamespace + ". Mesh: osm;"},
		"errors.txt":                     {"metrics:", "no ready pod of the mesh with a port admin in namespace " + testNamespace, "proxies:"},
		"verify.txt":                     {"✘ NATS: no ready pod osm-nats in namespace " + testNamespace},
		"versions.yaml":                  {"component: xds-edge"},
		"control-plane/deployments.yaml": {"name: osm-policy-compiler"},
		"control-plane/services.yaml":    {"name: osm-xds-edge"},
	} {
		for _, w := range wants {
			if !strings.Contains(files[name], w) {
				t.Errorf("%s lacks %q:\n%.2000s", name, w, files[name])
			}
		}
	}
	if strings.Contains(raw, "PRIVATE KEY") || regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.`).MatchString(raw) {
		t.Error("the report holds a private key or a JWT")
	}
}
