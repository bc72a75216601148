//go:build unix

package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
)

// benchServerEnv makes the test binary run the benchmark's CA server process
// instead of the tests (see TestMain).
const benchServerEnv = "OSM_CA_BENCH_SERVER"

// benchServerProfileEnv, when set, names the file the server process writes
// its CPU profile to: OSM_CA_BENCH_SERVER_PROFILE=/tmp/ca.prof go test -bench
// SignGRPCServerProcess ...
const benchServerProfileEnv = "OSM_CA_BENCH_SERVER_PROFILE"

// cpuTime is the process's user plus system CPU time.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func mustCPUTime(b *testing.B) time.Duration {
	d, err := cpuTime()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// benchMeter is a real OpenTelemetry SDK meter, as the CA runs with, so that
// the cost of its metrics is measured too.
func benchMeter() metric.Meter {
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())).Meter("bench")
}

// signRequests are distinct realistic Sign requests, as caclient.Sign builds
// them (a fresh key per request, a DER CSR naming the identity), so that
// nothing in the measured path can profit from seeing one CSR twice.
func signRequests(b *testing.B, n int) ([]*cav1.SignRequest, *ecdsa.PrivateKey) {
	b.Helper()
	reqs := make([]*cav1.SignRequest, n)
	var last *identity.Key
	for i := range reqs {
		k, err := identity.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		id := identity.New(td, "bookstore", fmt.Sprintf("bookbuyer-%d", i))
		csr, err := k.CSR(id)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = &cav1.SignRequest{Csr: csr, Identity: id.String(), Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
		last = k
	}
	return reqs, last.Private()
}

// runSigns signs in parallel until b.N requests are done, cycling through
// reqs.
func runSigns(b *testing.B, cl cav1.CertificateAuthorityServiceClient, reqs []*cav1.SignRequest) {
	b.Helper()
	var next atomic.Uint64
	b.SetParallelism(8) // enough requests in flight to keep the server busy
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := reqs[next.Add(1)%uint64(len(reqs))]
			if _, err := cl.Sign(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignGRPC measures end-to-end signing over gRPC with mTLS on
// loopback with the built-in provider, client and server in this process:
// the CA validates each CSR (parse, signature check, identity, SANs, TTL,
// the caller's role) and signs an ECDSA P-256 leaf. The goal is at least
// 5,000 signs/s per core.
//
// Metrics:
//   - signs/s: wall-clock throughput of the whole process (client and
//     server share it; run with -cpu 1 for one core);
//   - signs/cpu-s: signs per second of CPU the process used, client
//     included;
//   - floor-signs/cpu-s and pct-of-floor: the same for the bare ECDSA work
//     every sign needs (one CSR signature check and one signature), measured
//     in the same run, to show how much gRPC, TLS and X.509 add.
//
// BenchmarkSignGRPCServerProcess gives the CA server's own figure.
func BenchmarkSignGRPC(b *testing.B) {
	ca := startCA(b, caOptions{devToken: devToken, meter: benchMeter()})
	cl := ca.dial(b, ca.bootstrap(b, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	reqs, key := signRequests(b, 256)
	if _, err := cl.Sign(b.Context(), reqs[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := mustCPUTime(b)
	b.ResetTimer()
	runSigns(b, cl, reqs)
	b.StopTimer()
	cpu := mustCPUTime(b) - cpu0
	perSec := float64(b.N) / b.Elapsed().Seconds()
	perCPU := float64(b.N) / cpu.Seconds()
	b.ReportMetric(perSec, "signs/s")
	b.ReportMetric(perSec/float64(runtime.GOMAXPROCS(0)), "signs/s/core")
	b.ReportMetric(perCPU, "signs/cpu-s")

	// The floor: what every sign costs in ECDSA alone.
	csr, err := x509.ParseCertificateRequest(reqs[len(reqs)-1].Csr)
	if err != nil {
		b.Fatal(err)
	}
	n := max(b.N/4, 200)
	digest := sha256.Sum256([]byte("tbs"))
	c0 := mustCPUTime(b)
	for range n {
		if err := csr.CheckSignature(); err != nil {
			b.Fatal(err)
		}
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	floor := float64(n) / (mustCPUTime(b) - c0).Seconds()
	b.ReportMetric(floor, "floor-signs/cpu-s")
	b.ReportMetric(100*perCPU/floor, "pct-of-floor")
}

// BenchmarkSignGRPCServerProcess runs the CA server in a child process (this
// test binary, re-executed with GOMAXPROCS=1) and drives it from this one,
// so that the server's CPU time is measured on its own: the child reports
// its getrusage before and after the timed loop.
//
// Metrics:
//   - server-signs/cpu-s: signs per CPU-second of the CA server process,
//     everything it does included (TLS, HTTP/2, gRPC, validation, signing,
//     GC); this is the per-core figure;
//   - signs/s: wall-clock throughput of the one-core server, which is only
//     meaningful when the machine has a core to spare for the client.
func BenchmarkSignGRPCServerProcess(b *testing.B) {
	srv := startServerProcess(b)
	ca := &testCA{addr: srv.addr, hub: trust.NewHub()}
	ca.hub.Set(srv.bundle)
	cl := ca.dial(b, ca.bootstrap(b, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	reqs, _ := signRequests(b, 256)
	for _, r := range reqs[:16] { // warm up: connections, buffers, stacks
		if _, err := cl.Sign(b.Context(), r); err != nil {
			b.Fatal(err)
		}
	}
	// No ReportAllocs: this process is only the client.
	cpu0 := srv.cpu(b)
	b.ResetTimer()
	runSigns(b, cl, reqs)
	b.StopTimer()
	cpu := srv.cpu(b) - cpu0
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "server-signs/cpu-s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}

// serverProcess is the child running the CA.
type serverProcess struct {
	addr   string
	bundle *meshv1.TrustBundle
	in     *bufio.Writer
	out    *bufio.Scanner
}

func startServerProcess(b *testing.B) *serverProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1", "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child exits at EOF
		if err := cmd.Wait(); err != nil {
			b.Errorf("CA server process: %v", err)
		}
	})
	p := &serverProcess{in: bufio.NewWriter(stdin), out: bufio.NewScanner(stdout)}
	p.out.Buffer(nil, 1<<20)
	line := p.readLine(b)
	addr, rootB64, ok := strings.Cut(line, " ")
	if !ok {
		b.Fatalf("CA server process said %q, want <addr> <root>", line)
	}
	der, err := base64.StdEncoding.DecodeString(rootB64)
	if err != nil {
		b.Fatal(err)
	}
	bundle := &meshv1.TrustBundle{}
	if err := proto.Unmarshal(der, bundle); err != nil {
		b.Fatal(err)
	}
	p.addr, p.bundle = addr, bundle
	return p
}

func (p *serverProcess) readLine(b *testing.B) string {
	b.Helper()
	if !p.out.Scan() {
		b.Fatalf("CA server process: no output (%v)", p.out.Err())
	}
	return p.out.Text()
}

// cpu asks the child for its CPU time.
func (p *serverProcess) cpu(b *testing.B) time.Duration {
	b.Helper()
	if _, err := p.in.WriteString("cpu\n"); err != nil {
		b.Fatal(err)
	}
	if err := p.in.Flush(); err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(p.readLine(b), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// runBenchServer is the child's main: it serves the CA on loopback, prints
// its address and trust bundle, then answers each "cpu" line on stdin with
// its CPU time in nanoseconds until stdin closes.
func runBenchServer() int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, gs, err := newTestCA(ctx, caOptions{devToken: devToken, meter: benchMeter()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	bundle, err := proto.Marshal(ca.bundle())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if path := os.Getenv(benchServerProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("%s %s\n", lis.Addr(), base64.StdEncoding.EncodeToString(bundle))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		d, err := cpuTime()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(int64(d))
	}
	return 0
}
