package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// EnvGRPCBootstrap is the variable the injector sets in every container of
// a proxyless gRPC pod: where gRPC reads its xDS bootstrap, a file of the
// pod's bootstrap Secret volume.
const EnvGRPCBootstrap = "GRPC_XDS_BOOTSTRAP"

// dataDir is the kubelet's symlink to the volume's current files.
const dataDir = "..data"

// ProxylessPod plays the kubelet's part for a proxyless gRPC pod that the
// injector admitted: there is no kubelet (tests/kube.Kubelet only
// reports pods running), so this mounts the pod's bootstrap Secret volume
// into a directory and gives the environment to start the pod's program
// with (tests/cmd/bookstore-grpc, say).
//
// The volume is the Secret volume mounted at the directory holding the
// file the first container's GRPC_XDS_BOOTSTRAP names (the injector's
// osm-grpc-bootstrap at /etc/osm/grpc). Its files are laid out as the
// kubelet's atomic writer does: each write goes into a new hidden
// directory ..<timestamp>, the symlink ..data is swapped to it by a
// rename, and each key is a symlink <key> -> ..data/<key>; so a reader
// sees the whole old set or the whole new set, never a mix, and a file
// it holds open keeps its content. The stand-in watches the Secret and
// writes the volume again on every change of its data, within
// milliseconds (the kubelet takes up to about a minute).
//
// The mount path is mapped to the directory by rewriting paths, not by
// a mount: every value of the container's environment, and every JSON
// string of the bootstrap file, that is the mount path or lies under it
// is rewritten to the same path under the directory. A private mount
// namespace per process would keep the files byte for byte but needs root
// and a mount point at /etc/osm/grpc on the host; the dev stack runs
// without either.
type ProxylessPod struct {
	// Env is the first container's environment as admission left it (plain
	// values only; valueFrom is not resolved), with mount paths mapped
	// into Dir.
	Env map[string]string
	// Dir holds the volume's files.
	Dir string
	// Namespace and Secret name the Secret the volume holds.
	Namespace, Secret string

	mount     string            // the mount path in the pod
	bootstrap string            // the bootstrap file's path in the volume
	items     map[string]string // key -> path; nil: every key at its name
	mode      os.FileMode
	factory   informers.SharedInformerFactory
	cancel    context.CancelFunc
	synced    chan struct{} // closed after the first write

	mu      sync.Mutex
	written map[string][]byte // the Secret's data last written
	version string            // its resourceVersion
	syncs   int
	err     error // the first write error
}

// MountProxyless mounts pod's bootstrap Secret volume into dir (created
// when missing) and keeps it in step with the Secret until Stop. pod is
// the pod as the apiserver stored it (the injector's patch applied). It
// waits for the Secret, which the injector writes once the pod exists,
// and returns once the volume holds it; ctx bounds that wait only.
func MountProxyless(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, dir string) (*ProxylessPod, error) {
	p, err := newProxylessPod(pod, dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pod %s/%s volume dir: %w", pod.Namespace, pod.Name, err)
	}
	p.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(p.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + p.Secret }))
	inf := p.factory.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.sync,
		UpdateFunc: func(_, obj any) { p.sync(obj) },
	}); err != nil {
		return nil, err
	}
	syncCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.factory.Start(syncCtx.Done())
	select {
	case <-p.synced:
		return p, nil
	case <-ctx.Done():
		err := fmt.Errorf("pod %s/%s: volume of Secret %s/%s: %w", pod.Namespace, pod.Name, p.Namespace, p.Secret, context.Cause(ctx))
		return nil, errors.Join(err, p.Stop())
	}
}

// newProxylessPod finds pod's bootstrap volume and environment.
func newProxylessPod(pod *corev1.Pod, dir string) (*ProxylessPod, error) {
	name := pod.Namespace + "/" + pod.Name
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("pod %s has no container", name)
	}
	c := pod.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	boot := env[EnvGRPCBootstrap]
	if boot == "" {
		return nil, fmt.Errorf("pod %s container %s: no %s (the pod was not injected as a proxyless gRPC pod)", name, c.Name, EnvGRPCBootstrap)
	}
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if under(boot, m.MountPath) && (mount == nil || len(m.MountPath) > len(mount.MountPath)) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		return nil, fmt.Errorf("pod %s container %s: %s=%s is on no volume mount", name, c.Name, EnvGRPCBootstrap, boot)
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		return nil, fmt.Errorf("pod %s container %s volumeMounts %s: subPath is not supported", name, c.Name, mount.Name)
	}
	var vol *corev1.SecretVolumeSource
	for _, v := range pod.Spec.Volumes {
		if v.Name == mount.Name {
			vol = v.Secret
		}
	}
	if vol == nil || vol.SecretName == "" {
		return nil, fmt.Errorf("pod %s volumes %s: not a Secret volume", name, mount.Name)
	}
	mountPath := path.Clean(mount.MountPath)
	p := &ProxylessPod{
		Env: map[string]string{}, Dir: dir, Namespace: pod.Namespace, Secret: vol.SecretName,
		mount: mountPath, bootstrap: strings.TrimPrefix(path.Clean(boot), mountPath+"/"),
		mode: 0o644, synced: make(chan struct{}),
	}
	if vol.DefaultMode != nil {
		p.mode = os.FileMode(*vol.DefaultMode)
	}
	if len(vol.Items) > 0 {
		p.items = map[string]string{}
		for _, it := range vol.Items {
			p.items[it.Key] = path.Clean(it.Path)
		}
	}
	for k, v := range env {
		p.Env[k] = p.mapPath(v)
	}
	return p, nil
}

// under reports whether p is dir or lies under it.
func under(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// mapPath maps a path under the mount path to the same path under Dir;
// other values are returned unchanged.
func (p *ProxylessPod) mapPath(v string) string {
	if !strings.HasPrefix(v, "/") || !under(v, p.mount) {
		return v
	}
	return filepath.Join(p.Dir, filepath.FromSlash(strings.TrimPrefix(path.Clean(v), p.mount)))
}

// Path is the file of the Secret's key in Dir.
func (p *ProxylessPod) Path(key string) string {
	if rel, ok := p.items[key]; ok {
		return filepath.Join(p.Dir, filepath.FromSlash(rel))
	}
	return filepath.Join(p.Dir, key)
}

// ResourceVersion is the resourceVersion of the Secret whose data the
// volume holds.
func (p *ProxylessPod) ResourceVersion() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.version
}

// Syncs is the number of times the volume was written, 1 once
// MountProxyless returns: a caller waiting for a change of the Secret
// (the injector's renewal, say) waits for more.
func (p *ProxylessPod) Syncs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncs
}

// Err is the first error writing the volume, if any.
func (p *ProxylessPod) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stop stops following the Secret and waits until a write in progress
// has finished; the files stay. It returns the first write error.
func (p *ProxylessPod) Stop() error {
	p.cancel()
	p.factory.Shutdown()
	return p.Err()
}

// sync writes the Secret obj into the volume when its data changed.
func (p *ProxylessPod) sync(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Name != p.Secret {
		return
	}
	p.mu.Lock()
	same := p.syncs > 0 && maps.EqualFunc(p.written, s.Data, bytes.Equal)
	if same {
		p.version = s.ResourceVersion
	}
	p.mu.Unlock()
	if same {
		return
	}
	err := p.write(s.Data)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("volume of Secret %s/%s (resourceVersion %s): %w", p.Namespace, p.Secret, s.ResourceVersion, err)
		}
		return
	}
	p.written, p.version = maps.Clone(s.Data), s.ResourceVersion
	p.syncs++
	if p.syncs == 1 {
		close(p.synced)
	}
}

// write lays data out as the kubelet's atomic writer does (see
// ProxylessPod).
func (p *ProxylessPod) write(data map[string][]byte) error {
	files := map[string][]byte{} // path in the volume -> content
	for k, v := range data {
		rel := k
		if p.items != nil {
			if rel = p.items[k]; rel == "" {
				continue
			}
		}
		if rel == p.bootstrap {
			var err error
			if v, err = p.rewrite(v); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
		}
		files[rel] = v
	}
	ts, err := os.MkdirTemp(p.Dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for rel, v := range files {
		f := filepath.Join(ts, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f, v, p.mode); err != nil {
			return err
		}
		if err := os.Chmod(f, p.mode); err != nil { // WriteFile's mode is masked by the umask
			return err
		}
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(p.Dir, dataDir))
	tmp := filepath.Join(p.Dir, dataDir+"_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.Dir, dataDir)); err != nil {
		return err
	}
	// The top-level names: a symlink each into ..data; names gone from the
	// Secret lose theirs.
	want := map[string]bool{}
	for rel := range files {
		want[strings.SplitN(rel, "/", 2)[0]] = true
	}
	for _, top := range slices.Sorted(maps.Keys(want)) {
		link := filepath.Join(p.Dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDir, top), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, "..") && !want[n] && e.Type()&os.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(p.Dir, n)); err != nil {
				return err
			}
		}
	}
	if old != "" && old != filepath.Base(ts) {
		return os.RemoveAll(filepath.Join(p.Dir, old))
	}
	return nil
}

// rewrite maps every JSON string of the bootstrap that is a path under the
// mount path into Dir.
func (p *ProxylessPod) rewrite(b []byte) ([]byte, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			return p.mapPath(x)
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = walk(x[k])
			}
		}
		return v
	}
	return json.MarshalIndent(walk(v), "", "  ")
}
