package main

import (
	"bytes"
	"net"
	"strconv"
	"strings"
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
// second start finds the state of the first.
func TestOnce(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		var out bytes.Buffer
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
			"bookstore demo pods (made Ready by the kubelet stand-in)": "4 of 4 injected",
			"proxy bookbuyer/bookbuyer":                                "splits bookstore/bookstore-v1=75 bookstore/bookstore-v2=25",
			"proxy bookthief/bookthief":                                "reaches (none)",
		}
		for check, status := range checks {
			if !hasRow(out.String(), check, status) {
				t.Errorf("start %d: no row %q with status %q:\n%s", i+1, check, status, out.String())
			}
		}
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
