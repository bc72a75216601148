package compile

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Reasons of rejected policies, usable as Kubernetes Event reasons.
const (
	ReasonAccepted         = "Accepted"
	ReasonInvalidKind      = "InvalidKind"
	ReasonUnknownRuleKind  = "UnknownRuleKind"
	ReasonRouteNotFound    = "RouteNotFound"
	ReasonMatchNotFound    = "MatchNotFound"
	ReasonMissingField     = "MissingField"
	ReasonCrossNamespace   = "CrossNamespaceDestination"
	ReasonInvalidRegex     = "InvalidRegex"
	ReasonInvalidMethod    = "InvalidMethod"
	ReasonInvalidPort      = "InvalidPort"
	ReasonInvalidWeight    = "InvalidWeight"
	ReasonZeroTotalWeight  = "ZeroTotalWeight"
	ReasonUnsupportedField = "UnsupportedField"
	kindServiceAccount     = "ServiceAccount"
)

// Rejection says why a policy object is rejected, naming the field at fault.
type Rejection struct {
	// Reason is a short CamelCase reason, e.g. ReasonRouteNotFound.
	Reason string
	// FieldPath is the path of the offending field, e.g. "spec.rules[1].kind".
	FieldPath string
	// Message explains the rejection, naming the field and the value.
	Message string
}

// Error is the message, which names the field.
func (r *Rejection) Error() string { return r.Message }

func reject(reason, path, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, FieldPath: path, Message: path + ": " + fmt.Sprintf(format, args...)}
}

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

// ValidateHTTPRouteGroup checks the regexes and methods of an HTTPRouteGroup
// and returns its matches by name.
func ValidateHTTPRouteGroup(nn model.NN, g *meshv1.HTTPRouteGroup) (map[string]HTTPMatch, *Rejection) {
	out := make(map[string]HTTPMatch, len(g.GetMatches()))
	for i, m := range g.GetMatches() {
		path := fmt.Sprintf("spec.matches[%d]", i)
		if m.GetName() == "" {
			return nil, reject(ReasonMissingField, path+".name", "a match needs a name")
		}
		if _, dup := out[m.GetName()]; dup {
			return nil, reject(ReasonMissingField, path+".name", "duplicate match name %q", m.GetName())
		}
		if _, err := regexp.Compile(m.GetPathRegex()); err != nil {
			return nil, reject(ReasonInvalidRegex, path+".pathRegex", "invalid RE2 regular expression %q: %v", m.GetPathRegex(), err)
		}
		hm := HTTPMatch{Key: nn.String() + "/" + m.GetName(), PathRegex: m.GetPathRegex()}
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
				return nil, reject(ReasonInvalidMethod, fmt.Sprintf("%s.methods[%d]", path, j), "unknown HTTP method %q", meth)
			}
			hm.Methods = append(hm.Methods, up)
		}
		sort.Strings(hm.Methods)
		hm.Methods = dedupe(hm.Methods)
		for name, re := range m.GetHeaders() {
			if _, err := regexp.Compile(re); err != nil {
				return nil, reject(ReasonInvalidRegex, fmt.Sprintf("%s.headers[%s]", path, name), "invalid RE2 regular expression %q: %v", re, err)
			}
			hm.Headers = append(hm.Headers, HeaderMatch{Name: strings.ToLower(name), Regex: re})
		}
		sort.Slice(hm.Headers, func(a, b int) bool { return hm.Headers[a].Name < hm.Headers[b].Name })
		out[m.GetName()] = hm
	}
	return out, nil
}

// ValidateTCPRoute checks the ports of a TCPRoute.
func ValidateTCPRoute(r *meshv1.TCPRoute) (TCPMatch, *Rejection) {
	var m TCPMatch
	for i, p := range r.GetMatches().GetPorts() {
		if p < 1 || p > 65535 {
			return TCPMatch{}, reject(ReasonInvalidPort, fmt.Sprintf("spec.matches.ports[%d]", i), "port %d is outside 1-65535", p)
		}
		m.Ports = append(m.Ports, p)
	}
	sort.Slice(m.Ports, func(a, b int) bool { return m.Ports[a] < m.Ports[b] })
	return m, nil
}

// Target is a validated TrafficTarget with its rules resolved.
type Target struct {
	// Dest is the identity receiving the traffic.
	Dest model.Identity
	// Sources may send traffic to Dest, sorted.
	Sources []model.Identity
	// HTTP are the allowed HTTP matches, sorted by key.
	HTTP []HTTPMatch
	// HasHTTPRule is true when a rule names an HTTPRouteGroup; such a
	// target also allows plain TCP ports of Dest (OSM's behaviour).
	HasHTTPRule bool
	// TCPAll is true when a TCPRoute rule allows every port.
	TCPAll bool
	// TCPPorts are the ports TCPRoute rules allow, sorted.
	TCPPorts []int32
}

// AllowsTCPPort reports whether the target allows raw TCP to port.
func (t *Target) AllowsTCPPort(port int32) bool {
	if t.TCPAll {
		return true
	}
	for _, p := range t.TCPPorts {
		if p == port {
			return true
		}
	}
	return false
}

// RouteLookup finds the last good version of a route object.
type RouteLookup interface {
	// HTTPRouteGroup returns the matches of an accepted HTTPRouteGroup.
	HTTPRouteGroup(nn model.NN) (map[string]HTTPMatch, bool)
	// TCPRoute returns the match of an accepted TCPRoute.
	TCPRoute(nn model.NN) (TCPMatch, bool)
}

// ResolveTrafficTarget validates a TrafficTarget (access v1alpha3) and
// resolves its rules against the accepted route objects of its namespace.
func ResolveTrafficTarget(nn model.NN, tt *meshv1.TrafficTarget, routes RouteLookup) (*Target, *Rejection) {
	d := tt.GetDestination()
	if d.GetKind() != kindServiceAccount {
		return nil, reject(ReasonInvalidKind, "spec.destination.kind", "kind %q is not supported, want %q", d.GetKind(), kindServiceAccount)
	}
	if d.GetName() == "" {
		return nil, reject(ReasonMissingField, "spec.destination.name", "the destination ServiceAccount needs a name")
	}
	if d.GetNamespace() != "" && d.GetNamespace() != nn.Namespace {
		return nil, reject(ReasonCrossNamespace, "spec.destination.namespace", "namespace %q differs from the TrafficTarget's namespace %q; a TrafficTarget counts only in its destination's namespace", d.GetNamespace(), nn.Namespace)
	}
	t := &Target{Dest: model.Identity{Namespace: nn.Namespace, Name: d.GetName()}}
	for i, s := range tt.GetSources() {
		if s.GetKind() != kindServiceAccount {
			return nil, reject(ReasonInvalidKind, fmt.Sprintf("spec.sources[%d].kind", i), "kind %q is not supported, want %q", s.GetKind(), kindServiceAccount)
		}
		if s.GetName() == "" {
			return nil, reject(ReasonMissingField, fmt.Sprintf("spec.sources[%d].name", i), "the source ServiceAccount needs a name")
		}
		ns := s.GetNamespace()
		if ns == "" {
			ns = nn.Namespace
		}
		t.Sources = append(t.Sources, model.Identity{Namespace: ns, Name: s.GetName()})
	}
	sort.Slice(t.Sources, func(a, b int) bool { return t.Sources[a].Less(t.Sources[b]) })
	t.Sources = dedupe(t.Sources)
	if len(tt.GetRules()) == 0 {
		return nil, reject(ReasonMissingField, "spec.rules", "at least one rule is required")
	}
	seen := map[string]bool{}
	for i, r := range tt.GetRules() {
		path := fmt.Sprintf("spec.rules[%d]", i)
		rn := model.NN{Namespace: nn.Namespace, Name: r.GetName()}
		switch r.GetKind() {
		case model.RuleKindHTTPRouteGroup:
			matches, ok := routes.HTTPRouteGroup(rn)
			if !ok {
				return nil, reject(ReasonRouteNotFound, path+".name", "HTTPRouteGroup %q not found (or rejected) in namespace %q", r.GetName(), nn.Namespace)
			}
			t.HasHTTPRule = true
			names := r.GetMatches()
			if len(names) == 0 {
				for name := range matches {
					names = append(names, name)
				}
			}
			for j, name := range names {
				m, ok := matches[name]
				if !ok {
					return nil, reject(ReasonMatchNotFound, fmt.Sprintf("%s.matches[%d]", path, j), "HTTPRouteGroup %q has no match named %q", r.GetName(), name)
				}
				if !seen[m.Key] {
					seen[m.Key] = true
					t.HTTP = append(t.HTTP, m)
				}
			}
		case model.RuleKindTCPRoute:
			m, ok := routes.TCPRoute(rn)
			if !ok {
				return nil, reject(ReasonRouteNotFound, path+".name", "TCPRoute %q not found (or rejected) in namespace %q", r.GetName(), nn.Namespace)
			}
			if len(m.Ports) == 0 {
				t.TCPAll = true
			}
			t.TCPPorts = append(t.TCPPorts, m.Ports...)
		default:
			return nil, reject(ReasonUnknownRuleKind, path+".kind", "kind %q is not supported, want %q or %q", r.GetKind(), model.RuleKindHTTPRouteGroup, model.RuleKindTCPRoute)
		}
	}
	sort.Slice(t.HTTP, func(a, b int) bool { return t.HTTP[a].Key < t.HTTP[b].Key })
	sort.Slice(t.TCPPorts, func(a, b int) bool { return t.TCPPorts[a] < t.TCPPorts[b] })
	t.TCPPorts = dedupe(t.TCPPorts)
	if t.TCPAll {
		t.TCPPorts = nil
	}
	return t, nil
}

// Split is a validated TrafficSplit.
type Split struct {
	// Apex is the Service clients address.
	Apex model.NN
	// Backends share the apex's traffic, in the order written.
	Backends []Backend
}

// Backend is one weighted backend of a Split.
type Backend struct {
	// Service is the backend Service, in the apex's namespace.
	Service model.NN
	// Weight is the backend's relative weight; 0 takes no traffic.
	Weight uint32
}

// ValidateTrafficSplit validates a TrafficSplit (split v1alpha2).
func ValidateTrafficSplit(nn model.NN, s *meshv1.TrafficSplit) (*Split, *Rejection) {
	if s.GetService() == "" {
		return nil, reject(ReasonMissingField, "spec.service", "the apex service is required")
	}
	if len(s.GetMatches()) > 0 {
		return nil, reject(ReasonUnsupportedField, "spec.matches", "matches are not supported by split v1alpha2; remove them")
	}
	out := &Split{Apex: model.ApexOf(nn.Namespace, s)}
	var total int64
	seen := map[string]bool{}
	for i, b := range s.GetBackends() {
		path := fmt.Sprintf("spec.backends[%d]", i)
		if b.GetService() == "" {
			return nil, reject(ReasonMissingField, path+".service", "the backend service is required")
		}
		if seen[b.GetService()] {
			return nil, reject(ReasonMissingField, path+".service", "backend %q is listed twice", b.GetService())
		}
		seen[b.GetService()] = true
		if b.GetWeight() < 0 {
			return nil, reject(ReasonInvalidWeight, path+".weight", "weight %d is negative", b.GetWeight())
		}
		total += int64(b.GetWeight())
		out.Backends = append(out.Backends, Backend{Service: model.NN{Namespace: nn.Namespace, Name: b.GetService()}, Weight: uint32(b.GetWeight())})
	}
	if total == 0 {
		return nil, reject(ReasonZeroTotalWeight, "spec.backends", "the weights of the %d backends sum to 0", len(s.GetBackends()))
	}
	return out, nil
}

func dedupe[T comparable](s []T) []T {
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
