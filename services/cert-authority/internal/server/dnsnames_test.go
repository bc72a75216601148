package server

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
)

// TestBootstrapDNSNames: the injector may have its webhook Service's names,
// and nothing else; no other role may have any.
func TestBootstrapDNSNames(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken, dns: DNSPolicy{Namespace: "osm-system"}})
	cl := ca.dial(t, nil)
	injector := cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK
	boot := func(role cav1.ComponentRole, names ...string) (*cav1.BootstrapResponse, error) {
		return cl.Bootstrap(t.Context(), &cav1.BootstrapRequest{Token: devToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED,
			Role: role, Csr: csrtest.PEM(t, csrtest.Key(t), nil), DnsNames: names})
	}

	t.Run("the injector gets its Service names", func(t *testing.T) {
		names := []string{"osm-injector.osm-system", "osm-injector.osm-system.svc", "osm-injector.osm-system.svc.cluster.local"}
		resp, err := boot(injector, names...)
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseLeaf(t, resp.CertificateChainPem)
		if !slices.Equal(leaf.DNSNames, names) {
			t.Errorf("DNS SANs %v, want %v", leaf.DNSNames, names)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/osm/injector-webhook" {
			t.Errorf("URI SANs %v", leaf.URIs)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca.roots[0].Certificate())
		for _, n := range names {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: n, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("verify as %s: %v", n, err)
			}
		}
	})

	t.Run("no DNS names: a URI SAN only", func(t *testing.T) {
		resp, err := boot(injector)
		if err != nil {
			t.Fatal(err)
		}
		if leaf := parseLeaf(t, resp.CertificateChainPem); len(leaf.DNSNames) != 0 {
			t.Errorf("DNS SANs %v", leaf.DNSNames)
		}
	})

	tooMany := make([]string, maxDNSNames+1)
	for i := range tooMany {
		tooMany[i] = "s" + strings.Repeat("x", i) + ".osm-system.svc"
	}
	cases := []struct {
		name  string
		role  cav1.ComponentRole
		names []string
		code  codes.Code
		msg   string
	}{
		{"another role", cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE, []string{"osm-xds-edge.osm-system.svc"}, codes.PermissionDenied, "dns_names: role xds-edge"},
		{"another namespace", injector, []string{"osm-injector.osm-system.svc", "osm-injector.kube-system.svc"}, codes.InvalidArgument, `dns_names[1] "osm-injector.kube-system.svc"`},
		{"an external name", injector, []string{"evil.example.com"}, codes.InvalidArgument, `dns_names[0] "evil.example.com"`},
		{"the apiserver", injector, []string{"kubernetes.default.svc"}, codes.InvalidArgument, "dns_names[0]"},
		{"a wildcard", injector, []string{"*.osm-system.svc"}, codes.InvalidArgument, "dns_names[0]"},
		{"a bare namespace suffix", injector, []string{"osm-system.svc"}, codes.InvalidArgument, "dns_names[0]"},
		{"another cluster domain", injector, []string{"osm-injector.osm-system.svc.evil.example"}, codes.InvalidArgument, "dns_names[0]"},
		{"upper case", injector, []string{"OSM-injector.osm-system.svc"}, codes.InvalidArgument, "dns_names[0]"},
		{"an IP address", injector, []string{"10.0.0.1"}, codes.InvalidArgument, "dns_names[0]"},
		{"empty", injector, []string{""}, codes.InvalidArgument, "dns_names[0]"},
		{"a trailing dot", injector, []string{"osm-injector.osm-system.svc."}, codes.InvalidArgument, "dns_names[0]"},
		{"a duplicate", injector, []string{"osm-injector.osm-system.svc", "osm-injector.osm-system.svc"}, codes.InvalidArgument, "dns_names[1]"},
		{"too many", injector, tooMany, codes.InvalidArgument, "dns_names: 9 names"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := boot(c.role, c.names...)
			if st, _ := status.FromError(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("got %v, want %s mentioning %q", err, c.code, c.msg)
			}
		})
	}

	t.Run("a CA without a namespace issues no DNS names", func(t *testing.T) {
		bare := startCA(t, caOptions{devToken: devToken})
		_, err := bare.dial(t, nil).Bootstrap(t.Context(), &cav1.BootstrapRequest{Token: devToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED,
			Role: injector, Csr: csrtest.PEM(t, csrtest.Key(t), nil), DnsNames: []string{"osm-injector.osm-system.svc"}})
		if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "dns_names") {
			t.Errorf("got %v", err)
		}
	})
}
