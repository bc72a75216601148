package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// The protocols of an Egress port, as OSM names them.
const (
	EgressHTTP           = "http"
	EgressHTTPS          = "https"
	EgressTCP            = "tcp"
	EgressTCPServerFirst = "tcp-server-first"
)

// Ports of the sidecar's own listeners, which an Egress port may not take:
// a proxy's egress listener on such a port would collide with them.
const (
	SidecarOutboundPort = 15001
	SidecarInboundPort  = 15003
)

// The API group an Egress's matches name an HTTPRouteGroup with, as OSM
// writes it ("specs.smi-spec.io/v1alpha4"); the bare group is accepted too.
const egressMatchGroup = "specs.smi-spec.io"

// EgressPort is a validated port of an Egress.
type EgressPort struct {
	// Number is the destination port; Protocol one of the Egress
	// protocols, lower case.
	Number   int32
	Protocol string
}

// Egress is a validated Egress with its matches resolved.
type Egress struct {
	// Sources are the identities whose proxies get the egress, sorted.
	Sources []Identity
	// Hosts are lower-case host names, sorted (an entry may start with
	// "*." for any subdomain).
	Hosts []string
	// IPRanges are the destination CIDRs in canonical form, sorted.
	IPRanges []string
	// Ports are sorted by number, then protocol.
	Ports []EgressPort
	// HTTP are the HTTPRouteGroup matches that restrict its http
	// requests, sorted by key; empty allows every request to its hosts.
	HTTP []HTTPMatch
}

// hostName is a DNS name, lower case, optionally with a leading "*.".
var hostName = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// EgressObject checks what an Egress (policy.openservicemesh.io/v1alpha1)
// in namespace must be on its own: ServiceAccount sources with names, ports
// in range with a known protocol and not a sidecar port, host names, CIDRs,
// hosts for every http port, hosts or CIDRs for every https port, and
// matches naming HTTPRouteGroups only when it has an http port. It returns
// the validated policy with the names of its HTTPRouteGroups
// (ResolveEgress resolves them).
func EgressObject(namespace string, e *meshv1.Egress) (*Egress, []string, *Rejection) {
	if f := e.GetInvalidFields(); len(f) > 0 {
		return nil, nil, Reject(ReasonInvalidFieldType, f[0].GetFieldPath(), "%s (got %q)", f[0].GetMessage(), f[0].GetValue())
	}
	if len(e.GetSources()) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.sources", "at least one source is required")
	}
	out := &Egress{}
	for i, s := range e.GetSources() {
		path := fmt.Sprintf("spec.sources[%d]", i)
		if s.GetKind() != KindServiceAccount {
			return nil, nil, Reject(ReasonInvalidKind, path+".kind", "kind %q is not supported, want %q", s.GetKind(), KindServiceAccount)
		}
		if s.GetName() == "" {
			return nil, nil, Reject(ReasonMissingField, path+".name", "the source ServiceAccount needs a name")
		}
		if s.GetHasMtls() {
			return nil, nil, Reject(ReasonUnsupportedField, path+".mtls", "client certificates toward an egress gateway are not supported; remove mtls (the source's traffic leaves its sidecar as the application sent it)")
		}
		ns := s.GetNamespace()
		if ns == "" {
			ns = namespace
		}
		out.Sources = append(out.Sources, Identity{Namespace: ns, Name: s.GetName()})
	}
	sort.Slice(out.Sources, func(a, b int) bool { return out.Sources[a].less(out.Sources[b]) })
	out.Sources = Dedupe(out.Sources)

	if len(e.GetPorts()) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.ports", "at least one port is required")
	}
	var httpPort, httpsPort = -1, -1
	for i, p := range e.GetPorts() {
		path := fmt.Sprintf("spec.ports[%d]", i)
		n := p.GetNumber()
		switch {
		case n < 1 || n > 65535:
			return nil, nil, Reject(ReasonInvalidPort, path+".number", "port %d is outside 1-65535", n)
		case n == SidecarOutboundPort || n == SidecarInboundPort:
			return nil, nil, Reject(ReasonInvalidPort, path+".number", "port %d is a listener port of the sidecar itself (%d outbound, %d inbound)", n, SidecarOutboundPort, SidecarInboundPort)
		}
		proto := strings.ToLower(p.GetProtocol())
		switch proto {
		case EgressHTTP:
			if httpPort < 0 {
				httpPort = i
			}
		case EgressHTTPS:
			if httpsPort < 0 {
				httpsPort = i
			}
		case EgressTCP, EgressTCPServerFirst:
		default:
			return nil, nil, Reject(ReasonInvalidValue, path+".protocol", "protocol %q is not supported, want %q, %q, %q or %q", p.GetProtocol(), EgressHTTP, EgressHTTPS, EgressTCP, EgressTCPServerFirst)
		}
		out.Ports = append(out.Ports, EgressPort{Number: n, Protocol: proto})
	}
	sort.Slice(out.Ports, func(a, b int) bool {
		if out.Ports[a].Number != out.Ports[b].Number {
			return out.Ports[a].Number < out.Ports[b].Number
		}
		return out.Ports[a].Protocol < out.Ports[b].Protocol
	})
	out.Ports = Dedupe(out.Ports)

	for i, h := range e.GetHosts() {
		host := strings.ToLower(strings.TrimSuffix(h, "."))
		if len(host) > 253 || !hostName.MatchString(host) {
			return nil, nil, Reject(ReasonInvalidValue, fmt.Sprintf("spec.hosts[%d]", i), "%q is not a host name (a DNS name, optionally starting with \"*.\", without a port)", h)
		}
		out.Hosts = append(out.Hosts, host)
	}
	sort.Strings(out.Hosts)
	out.Hosts = Dedupe(out.Hosts)
	for i, c := range e.GetIpAddresses() {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, nil, Reject(ReasonInvalidValue, fmt.Sprintf("spec.ipAddresses[%d]", i), "%q is not a CIDR range (e.g. 203.0.113.0/24): %v", c, err)
		}
		out.IPRanges = append(out.IPRanges, p.Masked().String())
	}
	sort.Strings(out.IPRanges)
	out.IPRanges = Dedupe(out.IPRanges)
	if httpPort >= 0 && len(out.Hosts) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.hosts", "port %d (spec.ports[%d]) is http, which is allowed by host: list the hosts", e.GetPorts()[httpPort].GetNumber(), httpPort)
	}
	if httpsPort >= 0 && len(out.Hosts) == 0 && len(out.IPRanges) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.hosts", "port %d (spec.ports[%d]) is https, which is allowed by SNI or destination range: list hosts or ipAddresses", e.GetPorts()[httpsPort].GetNumber(), httpsPort)
	}

	var groups []string
	for i, m := range e.GetMatches() {
		path := fmt.Sprintf("spec.matches[%d]", i)
		group, _, _ := strings.Cut(m.GetApiGroup(), "/")
		if group != egressMatchGroup || m.GetKind() != RuleKindHTTPRouteGroup {
			return nil, nil, Reject(ReasonUnknownRuleKind, path, "kind %q of apiGroup %q is not supported, want kind %q of apiGroup %q", m.GetKind(), m.GetApiGroup(), RuleKindHTTPRouteGroup, egressMatchGroup+"/v1alpha4")
		}
		if m.GetName() == "" {
			return nil, nil, Reject(ReasonMissingField, path+".name", "the HTTPRouteGroup needs a name")
		}
		if httpPort < 0 {
			return nil, nil, Reject(ReasonUnsupportedField, path, "matches restrict http requests, and no port of this Egress is http")
		}
		groups = append(groups, m.GetName())
	}
	return out, groups, nil
}

// ResolveEgress validates an Egress in namespace (EgressObject) and
// resolves its matches against the accepted HTTPRouteGroups of its
// namespace: every match of each group named, rejecting a group that does
// not exist, with the policy-compiler's words.
func ResolveEgress(namespace string, e *meshv1.Egress, routes RouteLookup) (*Egress, *Rejection) {
	out, groups, rej := EgressObject(namespace, e)
	if rej != nil {
		return nil, rej
	}
	seen := map[string]bool{}
	for i, name := range groups {
		matches, ok := routes.HTTPRouteGroup(namespace, name)
		if !ok {
			return nil, Reject(ReasonRouteNotFound, fmt.Sprintf("spec.matches[%d].name", i), "HTTPRouteGroup %q not found (or rejected) in namespace %q", name, namespace)
		}
		for _, m := range matches {
			if !seen[m.Key] {
				seen[m.Key] = true
				out.HTTP = append(out.HTTP, m)
			}
		}
	}
	sort.Slice(out.HTTP, func(a, b int) bool { return out.HTTP[a].Key < out.HTTP[b].Key })
	return out, nil
}
