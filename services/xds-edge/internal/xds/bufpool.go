package xds

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is the gRPC buffer pool of the ADS listener. gRPC's default
// pool has tiers of 256 B, 4 KiB, 16 KiB, 32 KiB and 1 MiB, and clears the
// whole buffer it hands out: every response between 32 KiB and 1 MiB (an
// initial CDS or LDS) costs zeroing 1 MiB. This pool has a tier per power
// of two from 256 B to 4 MiB, so a buffer is at most twice the message, and
// does not clear: gRPC writes every byte of the length it asks for (a
// marshalled message, a frame read in full) before reading it, as its own
// non-zeroing pools already rely on. Larger buffers are not pooled.
type bufferPool struct {
	tiers [maxTierShift - minTierShift + 1]sync.Pool
}

const (
	minTierShift = 8  // 256 B
	maxTierShift = 22 // 4 MiB
)

var _ mem.BufferPool = (*bufferPool)(nil)

func newBufferPool() *bufferPool { return &bufferPool{} }

// tier returns the index of the smallest tier holding size bytes, or -1.
func tier(size int) int {
	if size > 1<<maxTierShift {
		return -1
	}
	shift := minTierShift
	if size > 1<<minTierShift {
		shift = bits.Len(uint(size - 1))
	}
	return shift - minTierShift
}

// Get returns a buffer of length size; its contents are undefined.
func (p *bufferPool) Get(size int) *[]byte {
	t := tier(size)
	if t < 0 {
		b := make([]byte, size)
		return &b
	}
	if bp, ok := p.tiers[t].Get().(*[]byte); ok {
		*bp = (*bp)[:size]
		return bp
	}
	b := make([]byte, size, 1<<(t+minTierShift))
	return &b
}

// Put returns a buffer from Get to its tier.
func (p *bufferPool) Put(bp *[]byte) {
	c := cap(*bp)
	t := tier(c)
	if t < 0 || c != 1<<(t+minTierShift) {
		return // not one of ours (or too large to keep)
	}
	*bp = (*bp)[:0]
	p.tiers[t].Put(bp)
}
