//go:build unix

package server

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"runtime"
	"syscall"
	"testing"
	"time"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// cpuTime is the process's user plus system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSignGRPC measures end-to-end signing over gRPC with mTLS on
// loopback with the built-in provider: the CA validates each CSR (parse,
// signature check, identity, SANs) and signs an ECDSA P-256 leaf. The goal
// is at least 5,000 signs/s per core.
//
// Metrics:
//   - signs/s: wall-clock throughput of the whole process (client and
//     server share it; run with -cpu 1 for one core);
//   - signs/cpu-s: signs per second of CPU the process used, client
//     included, so it is the per-core figure even on a machine shared with
//     other work;
//   - floor-signs/cpu-s and pct-of-floor: the same for the bare ECDSA work
//     every sign needs (one CSR signature check and one signature), measured
//     in the same run, to show how much gRPC, TLS and X.509 add.
func BenchmarkSignGRPC(b *testing.B) {
	ca := startCA(b, caOptions{devToken: devToken})
	cl := ca.dial(b, ca.bootstrap(b, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	key := genKey(b)
	csrPem := csrPEM(b, key, nil)
	req := &cav1.SignRequest{Csr: csrPem, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"}
	if _, err := cl.Sign(b.Context(), req); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8) // enough requests in flight to keep the server busy
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Sign(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	perSec := float64(b.N) / b.Elapsed().Seconds()
	perCPU := float64(b.N) / cpu.Seconds()
	b.ReportMetric(perSec, "signs/s")
	b.ReportMetric(perSec/float64(runtime.GOMAXPROCS(0)), "signs/s/core")
	b.ReportMetric(perCPU, "signs/cpu-s")

	// The floor: what every sign costs in ECDSA alone.
	p, _ := pem.Decode(csrPem)
	csr, err := x509.ParseCertificateRequest(p.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	n := max(b.N/4, 200)
	digest := sha256.Sum256([]byte("tbs"))
	c0 := cpuTime(b)
	for range n {
		if err := csr.CheckSignature(); err != nil {
			b.Fatal(err)
		}
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	floor := float64(n) / (cpuTime(b) - c0).Seconds()
	b.ReportMetric(floor, "floor-signs/cpu-s")
	b.ReportMetric(100*perCPU/floor, "pct-of-floor")
}
