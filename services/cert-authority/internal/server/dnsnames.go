package server

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/identity"
)

// maxDNSNames bounds BootstrapRequest.dns_names.
const maxDNSNames = 8

// mayHaveDNSNames reports whether role may have DNS SANs: only the roles
// that serve HTTPS to callers verifying a host name. The injector-webhook is
// called by the kube-apiserver at <svc>.<ns>.svc. Every other component is
// reached over mTLS and verified by its URI SAN only.
func mayHaveDNSNames(role identity.Role) bool { return role == identity.RoleInjectorWebhook }

// DNSPolicy says which DNS names Bootstrap may certify: names of Services in
// one namespace, the control plane's.
type DNSPolicy struct {
	// Namespace is the control-plane namespace; empty refuses every DNS
	// name.
	Namespace string
	// ClusterDomain is the cluster's DNS domain; empty means cluster.local.
	ClusterDomain string
}

// checkDNSNames returns nil when role may have every one of names, else a
// gRPC status naming the offending field.
func (p DNSPolicy) checkDNSNames(role identity.Role, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if !mayHaveDNSNames(role) {
		return status.Errorf(codes.PermissionDenied, "dns_names: role %s may not have DNS names in its certificate (only %s may)", role, identity.RoleInjectorWebhook)
	}
	if p.Namespace == "" {
		return status.Error(codes.PermissionDenied, "dns_names: this CA issues no DNS names (no control-plane namespace configured)")
	}
	if len(names) > maxDNSNames {
		return status.Errorf(codes.InvalidArgument, "dns_names: %d names, at most %d are allowed", len(names), maxDNSNames)
	}
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		if err := p.checkName(n); err != nil {
			return status.Errorf(codes.InvalidArgument, "dns_names[%d] %q: %v", i, n, err)
		}
		if seen[n] {
			return status.Errorf(codes.InvalidArgument, "dns_names[%d] %q: listed twice", i, n)
		}
		seen[n] = true
	}
	return nil
}

// checkName accepts <svc>.<ns>, <svc>.<ns>.svc and
// <svc>.<ns>.svc.<cluster-domain> for the policy's namespace.
func (p DNSPolicy) checkName(n string) error {
	domain := p.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	allowed := fmt.Sprintf("only <service>.%[1]s, <service>.%[1]s.svc or <service>.%[1]s.svc.%[2]s (a Service of the control-plane namespace) are allowed", p.Namespace, domain)
	svc, rest, ok := strings.Cut(n, ".")
	if !ok || !isDNSLabel(svc) {
		return fmt.Errorf("not a Service name: %s", allowed)
	}
	switch rest {
	case p.Namespace, p.Namespace + ".svc", p.Namespace + ".svc." + domain:
		return nil
	}
	return fmt.Errorf("not a Service of namespace %s: %s", p.Namespace, allowed)
}

// isDNSLabel reports whether s is an RFC 1123 label as Kubernetes names
// Services: at most 63 lowercase letters, digits and '-', starting with a
// letter and ending with a letter or digit.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
