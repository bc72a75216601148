package bootstrap

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// rendered parses what r renders for c and compares it with Build(c).
func rendered(t *testing.T, r *Renderer, c Config) {
	t.Helper()
	out, err := r.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	var got bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(out, &got); err != nil {
		t.Fatalf("rendered bootstrap does not parse: %v\n%s", err, out)
	}
	want, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("rendered bootstrap for %q differs from Build:\n%s", c.ProxyUUID, out)
	}
}

func TestRendererMatchesBuild(t *testing.T) {
	r := NewRenderer(16)
	other := config()
	other.Namespace, other.Probes = "bookbuyer", nil
	// Two pods of each of two workloads, and a UUID that JSON must escape.
	for _, uuid := range []string{"uuid-1", "uuid-2", `odd"uuid\`} {
		for _, c := range []Config{config(), other} {
			c.ProxyUUID = uuid
			rendered(t, r, c)
		}
	}
	if n := len(r.templates); n != 2 {
		t.Fatalf("%d templates, want one per workload shape", n)
	}
}

func TestRendererWithoutATemplate(t *testing.T) {
	r := NewRenderer(1)
	// A namespace that contains the placeholder: no template, still right.
	c := config()
	c.ServiceAccount = string(r.placeholder)
	rendered(t, r, c)
	if len(r.templates) != 0 {
		t.Fatal("kept a template where the placeholder occurs twice")
	}
	// At most size templates.
	for _, ns := range []string{"a", "b", "c"} {
		c := config()
		c.Namespace = ns
		rendered(t, r, c)
		if len(r.templates) > 1 {
			t.Fatalf("%d templates, more than the size of 1", len(r.templates))
		}
	}
	// Invalid configurations fail as Build fails.
	for name, edit := range map[string]func(*Config){
		"no UUID":      func(c *Config) { c.ProxyUUID = "" },
		"no xDS host":  func(c *Config) { c.XDSHost = "" },
		"a wrong port": func(c *Config) { c.XDSPort = 70000 },
	} {
		c := config()
		edit(&c)
		if _, err := r.Render(c); err == nil {
			t.Errorf("%s: rendered", name)
		} else if name == "a wrong port" && !strings.Contains(err.Error(), c.ProxyUUID) {
			t.Errorf("%s: error %q does not name the proxy", name, err)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	b.Run("renderer", func(b *testing.B) {
		r := NewRenderer(16)
		c := config()
		for b.Loop() {
			if _, err := r.Render(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("build-and-marshal", func(b *testing.B) {
		c := config()
		for b.Loop() {
			bs, err := Build(c)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Marshal(bs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
