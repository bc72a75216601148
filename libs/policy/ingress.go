package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// The source kinds of an IngressBackend, as OSM names them.
const (
	IngressSourceService   = "Service"
	IngressSourceIPRange   = "IPRange"
	IngressSourcePrincipal = "AuthenticatedPrincipal"
)

// The protocols of an IngressBackend's backend port.
const (
	IngressHTTP  = "http"
	IngressHTTPS = "https"
)

// IngressPort is a validated backend of an IngressBackend: a Service of the
// IngressBackend's namespace and the port its pods accept ingress on.
type IngressPort struct {
	// Service is the backend Service's name.
	Service string
	// Port is the pods' port (the port the app listens on).
	Port int32
	// Protocol is IngressHTTP or IngressHTTPS.
	Protocol string
	// SkipClientCertValidation (https): accept a client without a
	// certificate validated against the mesh's trust bundle.
	SkipClientCertValidation bool
	// SNIHosts (https) are the lower-case SNI names matched, sorted; empty
	// matches any.
	SNIHosts []string
}

// IngressBackend is a validated IngressBackend with its matches resolved.
type IngressBackend struct {
	// Backends are sorted by Service, then port.
	Backends []IngressPort
	// Services are the Service sources, whose endpoints' IPs are admitted,
	// sorted.
	Services []Identity
	// IPRanges are the IPRange sources in canonical CIDR form, sorted.
	IPRanges []string
	// Principals are the AuthenticatedPrincipal sources (certificate
	// SANs an https backend's client must present), sorted.
	Principals []string
	// HTTP are the HTTPRouteGroup matches that restrict the requests
	// allowed, sorted by key; empty allows every request.
	HTTP []HTTPMatch
}

// IngressBackendObject checks what an IngressBackend
// (policy.openservicemesh.io/v1alpha1) in namespace must be on its own:
// backends with a Service name, a port in range and protocol http or https
// (one protocol per Service port), sniHosts only on https; sources of a
// known kind, Services named, IPRanges CIDRs, principals only when an
// https backend validates client certificates; an http backend needs a
// Service or IPRange source, since plaintext is admitted by source address
// alone, and an https backend without sniHosts needs one too, or its
// chain could not be told from the mesh's own TLS chain on that port;
// matches naming HTTPRouteGroups. It returns the validated policy
// with the names of its HTTPRouteGroups (ResolveIngressBackend resolves
// them).
func IngressBackendObject(namespace string, ib *meshv1.IngressBackend) (*IngressBackend, []string, *Rejection) {
	if f := ib.GetInvalidFields(); len(f) > 0 {
		return nil, nil, Reject(ReasonInvalidFieldType, f[0].GetFieldPath(), "%s (got %q)", f[0].GetMessage(), f[0].GetValue())
	}
	if len(ib.GetBackends()) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.backends", "at least one backend is required")
	}
	out := &IngressBackend{}
	type portKey struct {
		svc  string
		port int32
	}
	seen := map[portKey]int{}
	httpBackend, validating := -1, false
	for i, b := range ib.GetBackends() {
		path := fmt.Sprintf("spec.backends[%d]", i)
		if b.GetName() == "" {
			return nil, nil, Reject(ReasonMissingField, path+".name", "the backend Service needs a name")
		}
		n := b.GetPort().GetNumber()
		if n < 1 || n > 65535 {
			return nil, nil, Reject(ReasonInvalidPort, path+".port.number", "port %d is outside 1-65535", n)
		}
		proto := strings.ToLower(b.GetPort().GetProtocol())
		if proto != IngressHTTP && proto != IngressHTTPS {
			return nil, nil, Reject(ReasonInvalidValue, path+".port.protocol", "protocol %q is not supported, want %q or %q", b.GetPort().GetProtocol(), IngressHTTP, IngressHTTPS)
		}
		p := IngressPort{Service: b.GetName(), Port: n, Protocol: proto}
		if proto == IngressHTTP {
			if httpBackend < 0 {
				httpBackend = i
			}
			if len(b.GetTls().GetSniHosts()) > 0 {
				return nil, nil, Reject(ReasonUnsupportedField, path+".tls.sniHosts", "sniHosts match the SNI of TLS connections, and port %d is http", n)
			}
		} else {
			p.SkipClientCertValidation = b.GetTls().GetSkipClientCertValidation()
			validating = validating || !p.SkipClientCertValidation
			for j, h := range b.GetTls().GetSniHosts() {
				host := strings.ToLower(strings.TrimSuffix(h, "."))
				if len(host) > 253 || !hostName.MatchString(host) {
					return nil, nil, Reject(ReasonInvalidValue, fmt.Sprintf("%s.tls.sniHosts[%d]", path, j), "%q is not a host name (a DNS name, optionally starting with \"*.\", without a port)", h)
				}
				p.SNIHosts = append(p.SNIHosts, host)
			}
			sort.Strings(p.SNIHosts)
			p.SNIHosts = Dedupe(p.SNIHosts)
		}
		k := portKey{p.Service, n}
		if j, ok := seen[k]; ok {
			return nil, nil, Reject(ReasonInvalidPort, path+".port", "Service %q port %d is already a backend (spec.backends[%d]): list each backend port once", p.Service, n, j)
		}
		seen[k] = i
		out.Backends = append(out.Backends, p)
	}
	sort.Slice(out.Backends, func(a, b int) bool {
		if out.Backends[a].Service != out.Backends[b].Service {
			return out.Backends[a].Service < out.Backends[b].Service
		}
		return out.Backends[a].Port < out.Backends[b].Port
	})

	if len(ib.GetSources()) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.sources", "at least one source is required")
	}
	for i, s := range ib.GetSources() {
		path := fmt.Sprintf("spec.sources[%d]", i)
		switch s.GetKind() {
		case IngressSourceService:
			if s.GetName() == "" {
				return nil, nil, Reject(ReasonMissingField, path+".name", "the source Service needs a name")
			}
			ns := s.GetNamespace()
			if ns == "" {
				ns = namespace
			}
			out.Services = append(out.Services, Identity{Namespace: ns, Name: s.GetName()})
		case IngressSourceIPRange:
			p, err := netip.ParsePrefix(s.GetName())
			if err != nil {
				return nil, nil, Reject(ReasonInvalidValue, path+".name", "%q is not a CIDR range (e.g. 10.0.0.0/8): %v", s.GetName(), err)
			}
			out.IPRanges = append(out.IPRanges, p.Masked().String())
		case IngressSourcePrincipal:
			if s.GetName() == "" {
				return nil, nil, Reject(ReasonMissingField, path+".name", "the principal needs a name (the client certificate's SAN)")
			}
			if !validating {
				return nil, nil, Reject(ReasonUnsupportedField, path, "an AuthenticatedPrincipal is matched against the client certificate of an https backend, and no backend is https with client certificate validation")
			}
			out.Principals = append(out.Principals, s.GetName())
		default:
			return nil, nil, Reject(ReasonInvalidKind, path+".kind", "kind %q is not supported, want %q, %q or %q", s.GetKind(), IngressSourceService, IngressSourceIPRange, IngressSourcePrincipal)
		}
	}
	sort.Slice(out.Services, func(a, b int) bool { return out.Services[a].less(out.Services[b]) })
	out.Services = Dedupe(out.Services)
	sort.Strings(out.IPRanges)
	out.IPRanges = Dedupe(out.IPRanges)
	sort.Strings(out.Principals)
	out.Principals = Dedupe(out.Principals)
	if httpBackend >= 0 && len(out.Services) == 0 && len(out.IPRanges) == 0 {
		return nil, nil, Reject(ReasonMissingField, "spec.sources", "backend %q port %d (spec.backends[%d]) is http, which is admitted by source address: list a Service or IPRange source",
			ib.GetBackends()[httpBackend].GetName(), ib.GetBackends()[httpBackend].GetPort().GetNumber(), httpBackend)
	}

	if len(out.Services) == 0 && len(out.IPRanges) == 0 {
		for i, b := range ib.GetBackends() {
			if strings.EqualFold(b.GetPort().GetProtocol(), IngressHTTPS) && len(b.GetTls().GetSniHosts()) == 0 {
				return nil, nil, Reject(ReasonMissingField, fmt.Sprintf("spec.backends[%d].tls.sniHosts", i),
					"https backend %q port %d needs sniHosts or a Service or IPRange source: without either, its filter chain would take the mesh's own TLS connections to that port",
					b.GetName(), b.GetPort().GetNumber())
			}
		}
	}

	var groups []string
	for i, m := range ib.GetMatches() {
		path := fmt.Sprintf("spec.matches[%d]", i)
		group, _, _ := strings.Cut(m.GetApiGroup(), "/")
		if group != egressMatchGroup || m.GetKind() != RuleKindHTTPRouteGroup {
			return nil, nil, Reject(ReasonUnknownRuleKind, path, "kind %q of apiGroup %q is not supported, want kind %q of apiGroup %q", m.GetKind(), m.GetApiGroup(), RuleKindHTTPRouteGroup, egressMatchGroup+"/v1alpha4")
		}
		if m.GetName() == "" {
			return nil, nil, Reject(ReasonMissingField, path+".name", "the HTTPRouteGroup needs a name")
		}
		groups = append(groups, m.GetName())
	}
	return out, groups, nil
}

// ResolveIngressBackend validates an IngressBackend in namespace
// (IngressBackendObject) and resolves its matches against the accepted
// HTTPRouteGroups of its namespace, rejecting a group that does not exist,
// with the policy-compiler's words. Its Services' endpoints are the
// compiler's to look up: a source Service without endpoints admits no one.
func ResolveIngressBackend(namespace string, ib *meshv1.IngressBackend, routes RouteLookup) (*IngressBackend, *Rejection) {
	out, groups, rej := IngressBackendObject(namespace, ib)
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
