package xds

import (
	"testing"

	"google.golang.org/grpc/mem"
)

func TestBufferPoolTiers(t *testing.T) {
	p := newBufferPool()
	for _, c := range []struct{ size, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {32<<10 + 1, 64 << 10}, {1 << 20, 1 << 20}, {4 << 20, 4 << 20}, {4<<20 + 1, 4<<20 + 1},
	} {
		b := p.Get(c.size)
		if len(*b) != c.size || cap(*b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", c.size, len(*b), cap(*b), c.cap)
		}
		p.Put(b)
	}
	// A buffer comes back from its tier, not cleared, at the length asked.
	b := p.Get(100 << 10)
	(*b)[0] = 42
	p.Put(b)
	again := p.Get(70 << 10)
	if cap(*again) != 128<<10 || len(*again) != 70<<10 {
		t.Fatalf("Get(70 KiB): len %d cap %d", len(*again), cap(*again))
	}
	// Foreign buffers are dropped, not pooled in the wrong tier.
	odd := make([]byte, 10, 1000)
	p.Put(&odd)
	if got := p.Get(900); cap(*got) != 1024 {
		t.Errorf("Get(900) after a foreign Put: cap %d, want 1024", cap(*got))
	}
}

// BenchmarkBufferPool gets and puts a buffer for a 100 KiB response, with
// this pool and with gRPC's default one (which clears 1 MiB each time).
func BenchmarkBufferPool(b *testing.B) {
	b.Run("grpc-default", func(b *testing.B) {
		p := mem.DefaultBufferPool()
		for b.Loop() {
			p.Put(p.Get(100 << 10))
		}
	})
	b.Run("ours", func(b *testing.B) {
		p := newBufferPool()
		for b.Loop() {
			p.Put(p.Get(100 << 10))
		}
	})
}
