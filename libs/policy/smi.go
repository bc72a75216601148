package policy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Kinds a TrafficTarget names: the subjects' kind and its rules' kinds.
const (
	KindServiceAccount     = "ServiceAccount"
	RuleKindHTTPRouteGroup = "HTTPRouteGroup"
	RuleKindTCPRoute       = "TCPRoute"
)

// HTTPMatch is one validated HTTP match of an HTTPRouteGroup.
type HTTPMatch struct {
	// Key identifies the match in the mesh: "ns/group/match".
	Key string
	// PathRegex is an RE2 regex the whole path must match; empty: any path.
	PathRegex string
	// Methods are upper-case HTTP methods; empty: any method.
	Methods []string
	// Headers must all match, sorted by name.
	Headers []HeaderMatch
}

// HeaderMatch is a request header whose value must match an RE2 regex.
type HeaderMatch struct {
	// Name is the lower-case header name; Regex is RE2 for its value.
	Name, Regex string
}

// TCPMatch is the validated match of a TCPRoute.
type TCPMatch struct {
	// Ports are the destination ports matched, sorted; empty: every port.
	Ports []int32
}

var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true,
}

// HTTPRouteGroup checks the names, regexes and methods of the
// HTTPRouteGroup namespace/name and returns its matches by name.
func HTTPRouteGroup(namespace, name string, g *meshv1.HTTPRouteGroup) (map[string]HTTPMatch, *Rejection) {
	out := make(map[string]HTTPMatch, len(g.GetMatches()))
	for i, m := range g.GetMatches() {
		path := fmt.Sprintf("spec.matches[%d]", i)
		if m.GetName() == "" {
			return nil, Reject(ReasonMissingField, path+".name", "a match needs a name")
		}
		if _, dup := out[m.GetName()]; dup {
			return nil, Reject(ReasonMissingField, path+".name", "duplicate match name %q", m.GetName())
		}
		if _, err := regexp.Compile(m.GetPathRegex()); err != nil {
			return nil, Reject(ReasonInvalidRegex, path+".pathRegex", "invalid RE2 regular expression %q: %v", m.GetPathRegex(), err)
		}
		hm := HTTPMatch{Key: namespace + "/" + name + "/" + m.GetName(), PathRegex: m.GetPathRegex()}
		if hm.PathRegex == ".*" || hm.PathRegex == "/*" {
			hm.PathRegex = ""
		}
		for j, meth := range m.GetMethods() {
			up := strings.ToUpper(meth)
			if up == "*" {
				hm.Methods = nil
				break
			}
			if !httpMethods[up] {
				return nil, Reject(ReasonInvalidMethod, fmt.Sprintf("%s.methods[%d]", path, j), "unknown HTTP method %q", meth)
			}
			hm.Methods = append(hm.Methods, up)
		}
		sort.Strings(hm.Methods)
		hm.Methods = Dedupe(hm.Methods)
		// Headers in name order, so that the first invalid one reported is
		// the same every time.
		names := make([]string, 0, len(m.GetHeaders()))
		for h := range m.GetHeaders() {
			names = append(names, h)
		}
		sort.Strings(names)
		for _, h := range names {
			re := m.GetHeaders()[h]
			if _, err := regexp.Compile(re); err != nil {
				return nil, Reject(ReasonInvalidRegex, fmt.Sprintf("%s.headers[%s]", path, h), "invalid RE2 regular expression %q: %v", re, err)
			}
			hm.Headers = append(hm.Headers, HeaderMatch{Name: strings.ToLower(h), Regex: re})
		}
		sort.Slice(hm.Headers, func(a, b int) bool { return hm.Headers[a].Name < hm.Headers[b].Name })
		out[m.GetName()] = hm
	}
	return out, nil
}

// TCPRoute checks the ports of a TCPRoute and returns its match.
func TCPRoute(r *meshv1.TCPRoute) (TCPMatch, *Rejection) {
	var m TCPMatch
	for i, p := range r.GetMatches().GetPorts() {
		if p < 1 || p > 65535 {
			return TCPMatch{}, Reject(ReasonInvalidPort, fmt.Sprintf("spec.matches.ports[%d]", i), "port %d is outside 1-65535", p)
		}
		m.Ports = append(m.Ports, p)
	}
	sort.Slice(m.Ports, func(a, b int) bool { return m.Ports[a] < m.Ports[b] })
	return m, nil
}

// TrafficTarget checks what a TrafficTarget (access v1alpha3) in namespace
// must be on its own: ServiceAccount subjects with names, a destination in
// its own namespace, at least one rule, each of a supported kind. Whether
// its rules' routes and matches exist is for the compiler, which resolves
// them against the accepted routes.
func TrafficTarget(namespace string, tt *meshv1.TrafficTarget) *Rejection {
	d := tt.GetDestination()
	if d.GetKind() != KindServiceAccount {
		return Reject(ReasonInvalidKind, "spec.destination.kind", "kind %q is not supported, want %q", d.GetKind(), KindServiceAccount)
	}
	if d.GetName() == "" {
		return Reject(ReasonMissingField, "spec.destination.name", "the destination ServiceAccount needs a name")
	}
	if d.GetNamespace() != "" && d.GetNamespace() != namespace {
		return Reject(ReasonCrossNamespace, "spec.destination.namespace", "namespace %q differs from the TrafficTarget's namespace %q; a TrafficTarget counts only in its destination's namespace", d.GetNamespace(), namespace)
	}
	for i, s := range tt.GetSources() {
		if s.GetKind() != KindServiceAccount {
			return Reject(ReasonInvalidKind, fmt.Sprintf("spec.sources[%d].kind", i), "kind %q is not supported, want %q", s.GetKind(), KindServiceAccount)
		}
		if s.GetName() == "" {
			return Reject(ReasonMissingField, fmt.Sprintf("spec.sources[%d].name", i), "the source ServiceAccount needs a name")
		}
	}
	if len(tt.GetRules()) == 0 {
		return Reject(ReasonMissingField, "spec.rules", "at least one rule is required")
	}
	for i, r := range tt.GetRules() {
		switch r.GetKind() {
		case RuleKindHTTPRouteGroup, RuleKindTCPRoute:
		default:
			return Reject(ReasonUnknownRuleKind, fmt.Sprintf("spec.rules[%d].kind", i), "kind %q is not supported, want %q or %q", r.GetKind(), RuleKindHTTPRouteGroup, RuleKindTCPRoute)
		}
	}
	return nil
}

// TrafficSplit checks a TrafficSplit (split v1alpha2): an apex service,
// named backends listed once each, weights not negative and not all zero.
func TrafficSplit(s *meshv1.TrafficSplit) *Rejection {
	if s.GetService() == "" {
		return Reject(ReasonMissingField, "spec.service", "the apex service is required")
	}
	if len(s.GetMatches()) > 0 {
		return Reject(ReasonUnsupportedField, "spec.matches", "matches are not supported by split v1alpha2; remove them")
	}
	var total int64
	seen := map[string]bool{}
	for i, b := range s.GetBackends() {
		path := fmt.Sprintf("spec.backends[%d]", i)
		if b.GetService() == "" {
			return Reject(ReasonMissingField, path+".service", "the backend service is required")
		}
		if seen[b.GetService()] {
			return Reject(ReasonMissingField, path+".service", "backend %q is listed twice", b.GetService())
		}
		seen[b.GetService()] = true
		if b.GetWeight() < 0 {
			return Reject(ReasonInvalidWeight, path+".weight", "weight %d is negative", b.GetWeight())
		}
		total += int64(b.GetWeight())
	}
	if total == 0 {
		return Reject(ReasonZeroTotalWeight, "spec.backends", "the weights of the %d backends sum to 0", len(s.GetBackends()))
	}
	return nil
}

// Dedupe drops the repeats of adjacent equal values of a sorted slice, in
// place.
func Dedupe[T comparable](s []T) []T {
	if len(s) < 2 {
		return s
	}
	out := s[:1]
	for _, v := range s[1:] {
		if v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}
