package netns

import (
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
)

// podIP is put on the namespace's loopback by TestMain.
var podIP = netip.MustParsePrefix("10.244.250.7/32")

func TestMain(m *testing.M) {
	os.Exit(Main(m, Options{Addrs: []netip.Prefix{podIP}}))
}

// TestPodIPCarriesTrafficInsideTheNamespace: inside Main's namespace the
// pod IP is on lo and a server on it answers a client; the namespace is
// not the one the test binary started in (so the host's interfaces never
// got the address); loopback works too.
func TestPodIPCarriesTrafficInsideTheNamespace(t *testing.T) {
	Require(t)
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if Outer() == "" || own == Outer() {
		t.Fatalf("the tests run in network namespace %s, the outer process's is %q", own, Outer())
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Flags&net.FlagUp == 0 {
		t.Fatal("lo is down")
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.String())
	}
	if !slices.Contains(got, podIP.String()) {
		t.Fatalf("lo has %v, want %s on it", got, podIP)
	}
	for _, host := range []string{podIP.Addr().String(), "127.0.0.1"} {
		lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatalf("dial %s: %v", lis.Addr(), err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo over %s: %q, %v", lis.Addr(), buf, err)
		}
		c.Close()
		lis.Close()
	}
}

// TestOnlyTheNamespaceHasTheAddress: an address the namespace's lo lacks
// is not reachable (nothing routes out of the namespace).
func TestOnlyTheNamespaceHasTheAddress(t *testing.T) {
	Require(t)
	if _, err := net.Listen("tcp", "10.244.250.8:0"); err == nil {
		t.Fatal("listened on 10.244.250.8, which Main did not add")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name != "lo" {
			t.Errorf("the namespace has interface %s; want lo only", i.Name)
		}
	}
}
