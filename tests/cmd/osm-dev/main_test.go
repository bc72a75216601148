package main

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOnce runs the README's dev stack command in its smoke-test form twice
// on one state directory: everything starts, every check passes, and the
// second start finds the state of the first. The first start plays a host
// where the dev stack may not make a network namespace (not root): the
// proxyless gRPC traffic is skipped, saying why, and the rest runs. The
// second makes one where it can and checks real calls: bookbuyer's succeed
// and split as the TrafficSplit says, bookthief's are denied.
func TestOnce(t *testing.T) {
	dir := t.TempDir()
	canNS := false
	if ns, err := newPodNS(nil); err == nil {
		ns.close()
		canNS = true
	} else {
		t.Logf("no network namespace here (%v): the traffic is skipped in both starts", err)
	}
	for i := range 2 {
		var out bytes.Buffer
		if i == 0 {
			newNS = func([]netip.Prefix) (*podNS, error) {
				return nil, fmt.Errorf("unshare(CLONE_NEWNET): %w", syscall.EPERM)
			}
		} else {
			newNS = newPodNS
		}
		args := []string{"--once", "--dir", dir, "--nats-port", strconv.Itoa(freePort(t))}
		if err := run(t.Context(), args, &out); err != nil {
			t.Fatalf("start %d: %v\n%s", i+1, err, out.String())
		}
		checks := map[string]string{
			"watcher writes mesh-observed, compiler watches it": "ok (",
			"edge refused a write to mesh-compiled":             "ok",
			"CRDs from the chart":                               "established",
			"meshed namespaces":                                 "4",
			"SMI TrafficTarget API":                             "served",
			"bucket mesh-trust":                                 "1 key(s)",
			"cert-authority":                                    "ready",
			"injector-webhook":                                  "ready",
			"smi-watcher":                                       "ready",
			"policy-compiler":                                   "ready",
			"xds-edge":                                          "ready",
			"bookstore demo pods (made Ready by the kubelet stand-in)": "6 of 6 injected (2 Envoy sidecars, 4 proxyless gRPC)",
			"proxy bookbuyer/bookbuyer":                                "splits bookstore/bookstore-v1=75 bookstore/bookstore-v2=25",
			"proxy bookthief/bookthief":                                "reaches (none)",
		}
		if i == 0 || !canNS {
			checks["proxyless gRPC calls"] = "skipped: a network namespace needs root or CAP_SYS_ADMIN"
			if !strings.Contains(out.String(), "proxyless gRPC traffic skipped") {
				t.Errorf("start %d: no message saying the traffic is skipped and why:\n%s", i+1, out.String())
			}
		} else {
			checks["pod bookstore/bookstore-v1-0 (bookstore-grpc serve)"] = "serving 10.244.1.10:14001"
			checks["pod bookstore/bookstore-v2-0 (bookstore-grpc serve)"] = "serving 10.244.1.20:14001"
			checks["bookbuyer-grpc calls bookstore"] = "ok "
			checks["bookthief-grpc calls bookstore"] = "denied: none of "
		}
		for check, status := range checks {
			if !hasRow(out.String(), check, status) {
				t.Errorf("start %d: no row %q with status %q:\n%s", i+1, check, status, out.String())
			}
		}
	}
}

// TestEvaluate: --once's traffic check fails when bookbuyer's calls fail
// or stray from the split, or when bookthief is served or made no call.
func TestEvaluate(t *testing.T) {
	split := map[string]int{"v1": 75, "v2": 25}
	ok := func(v1, v2 int) map[outcome]int {
		return map[outcome]int{{"v1", resultOK}: v1, {"v2", resultOK}: v2}
	}
	denied := map[outcome]int{{"-", resultOther}: 20}
	for _, tc := range []struct {
		name         string
		calls, thief map[outcome]int
		weights      map[string]int
		wantErr      string
	}{
		{name: "75/25", calls: ok(760, 240), thief: denied, weights: split},
		{name: "10/90 after an edit", calls: ok(95, 905), thief: denied, weights: map[string]int{"v1": 10, "v2": 90}},
		{name: "off the split", calls: ok(600, 400), thief: denied, weights: split, wantErr: "bookbuyer's calls to v1: 60.0% of 1000, want 75% ± 6"},
		{name: "denied calls", calls: map[outcome]int{{"v1", resultOK}: 740, {"v2", resultOK}: 250, {"-", resultDenied}: 10}, thief: denied, weights: split,
			wantErr: "10 of bookbuyer's 1000 calls failed (PermissionDenied 10, other 0"},
		{name: "bookthief served", calls: ok(750, 250), thief: map[outcome]int{{"v2", resultOK}: 1, {"-", resultOther}: 9}, weights: split,
			wantErr: "1 of bookthief's 10 calls were served"},
		{name: "bookthief silent", calls: ok(750, 250), thief: map[outcome]int{}, weights: split, wantErr: "bookthief made no call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := evaluate(tc.calls, tc.thief, tc.weights, "", "Unavailable: no listener")
			if len(rows) != 2 {
				t.Fatalf("rows = %v, want bookbuyer's and bookthief's", rows)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v\nrows %v", err, rows)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--nats-port", "70000"}, &out); err == nil || !strings.Contains(err.Error(), "--nats-port") {
		t.Fatalf("err = %v, want one naming --nats-port", err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"--help"}, &out); err != nil || !strings.Contains(out.String(), "--once") {
		t.Fatalf("--help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"--call-rate", "-1"}, &out); err == nil || !strings.Contains(err.Error(), "--call-rate") {
		t.Fatalf("err = %v, want one naming --call-rate", err)
	}
}

// hasRow reports whether the report has a row for check whose status
// column starts with status.
func hasRow(report, check, status string) bool {
	for _, line := range strings.Split(report, "\n") {
		if i := strings.Index(line, check); i >= 0 {
			if strings.HasPrefix(strings.TrimSpace(line[i+len(check):]), status) {
				return true
			}
		}
	}
	return false
}

// TestScreen: on a terminal the live table is redrawn in place, erasing
// the rows it took (a line wider than the terminal takes more than one),
// and lines written meanwhile go above it; elsewhere each table follows
// the last.
func TestScreen(t *testing.T) {
	var out bytes.Buffer
	s := &screen{out: &out, tty: true, width: func() int { return 10 }}
	s.show("a table\n" + strings.Repeat("x", 25) + "\n")
	s.Write([]byte("an update\n"))
	s.show("new\n")
	want := "a table\n" + strings.Repeat("x", 25) + "\n" +
		"\x1b[4A\x1b[J" + "an update\n" + "a table\n" + strings.Repeat("x", 25) + "\n" +
		"\x1b[4A\x1b[J" + "new\n"
	if out.String() != want {
		t.Errorf("terminal output\n%q\nwant\n%q", out.String(), want)
	}
	out.Reset()
	s = &screen{out: &out}
	s.show("one\n")
	s.Write([]byte("an update\n"))
	s.show("two\n")
	if want := "\none\nan update\n\ntwo\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}
