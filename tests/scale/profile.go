package scale

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/openservicemesh/osm/tests/stack"
)

// profiles takes a CPU profile of the watcher, the compiler and each edge
// (served with --enable-pprof on their admin listeners) over the next
// seconds, into dir/<process>.pprof, for `go tool pprof`; wait returns
// once every profile is written, with the first error.
func (r *run) profiles(ctx context.Context, dir string, seconds int, edgeAdmins []string) (wait func() error) {
	targets := map[string]string{
		"smi-watcher":     r.m.AdminAddr(stack.Watcher),
		"policy-compiler": r.m.AdminAddr(stack.Compiler),
	}
	for i, a := range edgeAdmins {
		targets[fmt.Sprintf("xds-edge-%d", i)] = a
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for name, admin := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := saveProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, seconds), filepath.Join(dir, name+".pprof")); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s: %v", name, err))
				mu.Unlock()
			}
		}()
	}
	return func() error {
		wg.Wait()
		if len(errs) > 0 {
			return fmt.Errorf("profiles: %s", strings.Join(errs, "; "))
		}
		return nil
	}
}

func saveProfile(ctx context.Context, url, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
