package identity

import (
	"crypto/x509"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	id, err := Parse("spiffe://cluster.local/ns/bookstore/sa/bookstore-v1")
	if err != nil || id != New("cluster.local", "bookstore", "bookstore-v1") {
		t.Fatalf("Parse = %+v, %v", id, err)
	}
	if id.String() != "spiffe://cluster.local/ns/bookstore/sa/bookstore-v1" || id.URL().String() != id.String() {
		t.Fatalf("String %q URL %q", id, id.URL())
	}
	if _, err := ParseIn(id.String(), "other.domain"); !errors.Is(err, ErrForeignTrustDomain) {
		t.Fatalf("ParseIn of another domain: %v", err)
	}
	if got, ok := FromURI(id.URL(), "cluster.local"); !ok || got != id {
		t.Fatalf("FromURI = %+v %v", got, ok)
	}
	if _, ok := FromURI(ControlPlaneURI("cluster.local", RoleXDSEdge), "cluster.local"); ok {
		t.Fatal("a control-plane identity parsed as a workload")
	}
	if r, ok := RoleFromURI(ControlPlaneURI("cluster.local", RoleXDSEdge), "cluster.local"); !ok || r != RoleXDSEdge {
		t.Fatalf("RoleFromURI = %q %v", r, ok)
	}
	if _, ok := RoleFromURI(id.URL(), "cluster.local"); ok {
		t.Fatal("a workload identity parsed as a role")
	}
	for _, bad := range []string{
		"spiffe://cluster.local/ns/Bad_NS/sa/x", "spiffe://Upper.Domain/ns/a/sa/b",
		"", "https://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns/a/sa/b/c",
		"spiffe://td/ns//sa/b", "spiffe://td/sa/a/ns/b", "spiffe://td/ns/a/sa/b?x=1", "spiffe://td:8080/ns/a/sa/b",
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestCSRCarriesIdentity(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id := New("cluster.local", "bookbuyer", "bookbuyer")
	der, err := k.CSR(id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("csr: %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		t.Fatalf("csr URIs %v", csr.URIs)
	}
	if _, err := k.PEM(); err != nil {
		t.Fatal(err)
	}
}

// TestNameRulesMatchTheirExpressions checks the hand-written name checks
// against the regular expressions they replace, on every string of up to 4
// characters over an alphabet with each character class, and on longer
// edge cases.
func TestNameRulesMatchTheirExpressions(t *testing.T) {
	trustDomainRE := regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)
	dnsLabelRE := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomainRE := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	check := func(s string) {
		if got, want := isTrustDomainChars(s), trustDomainRE.MatchString(s); got != want {
			t.Errorf("trust domain %q: %v, want %v", s, got, want)
		}
		if got, want := isDNSLabel(s), dnsLabelRE.MatchString(s); got != want {
			t.Errorf("label %q: %v, want %v", s, got, want)
		}
		if got, want := isDNSSubdomain(s), dnsSubdomainRE.MatchString(s); got != want {
			t.Errorf("subdomain %q: %v, want %v", s, got, want)
		}
	}
	alphabet := []string{"a", "0", "-", ".", "_", "A", "/"}
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(prefix+c, n-1)
		}
	}
	gen("", 4)
	for _, s := range []string{strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 255), strings.Repeat("a", 256),
		"a" + strings.Repeat("-", 61) + "a", "a" + strings.Repeat("-", 62) + "a", "bookbuyer.v1", "ns.", ".ns", "a..b", "é"} {
		check(s)
	}
}

// TestUsagesDoNotMix: a certificate's URI SAN says what it is for, and
// neither form parses as the other (a stolen service certificate is no xDS
// client, an xDS client certificate is no service identity nor a role).
func TestUsagesDoNotMix(t *testing.T) {
	id := New("cluster.local", "bookstore", "bookstore-v1")
	xds := id.URLFor(UsageXDSClient)
	if xds.String() != "spiffe://cluster.local/osm/xds-client/ns/bookstore/sa/bookstore-v1" {
		t.Fatalf("xds-client URI %q", xds)
	}
	if id.URLFor(UsageService).String() != id.String() {
		t.Fatalf("service URI %q", id.URLFor(UsageService))
	}
	if got, err := ParseFor(xds.String(), UsageXDSClient); err != nil || got != id {
		t.Fatalf("ParseFor(xds-client) = %+v, %v", got, err)
	}
	if got, err := ParseFor(id.String(), UsageService); err != nil || got != id {
		t.Fatalf("ParseFor(service) = %+v, %v", got, err)
	}
	if _, err := ParseFor(id.String(), UsageXDSClient); err == nil || !strings.Contains(err.Error(), "service certificate cannot open an xDS stream") {
		t.Fatalf("a service identity parsed as an xDS client: %v", err)
	}
	if _, err := ParseFor(xds.String(), UsageService); err == nil {
		t.Fatal("an xDS client identity parsed as a service identity")
	}
	if _, ok := FromURI(xds, "cluster.local"); ok {
		t.Fatal("an xDS client identity parsed as a workload")
	}
	if _, ok := RoleFromURI(xds, "cluster.local"); ok {
		t.Fatal("an xDS client identity parsed as a control-plane role")
	}
	for _, bad := range []string{
		"spiffe://cluster.local/osm/xds-client", "spiffe://cluster.local/osm/xds-client/ns/a",
		"spiffe://cluster.local/osm/xds-clientx/ns/a/sa/b", "spiffe://cluster.local/osm/xds-client/ns/A/sa/b",
		"spiffe://cluster.local/osm/xds-client/osm/xds-client/ns/a/sa/b",
	} {
		if _, err := ParseFor(bad, UsageXDSClient); err == nil {
			t.Errorf("ParseFor(%q, xds-client) accepted", bad)
		}
	}
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := k.CSRFor(id, UsageXDSClient)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || len(csr.URIs) != 1 || csr.URIs[0].String() != xds.String() {
		t.Fatalf("xds-client csr: %v %v", csr, err)
	}
}
