package compile

import (
	"fmt"
	"sort"

	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Reasons of rejected policies (libs/policy's, which the validating
// webhook shares), usable as Kubernetes Event reasons.
const (
	ReasonAccepted         = policy.ReasonAccepted
	ReasonInvalidKind      = policy.ReasonInvalidKind
	ReasonUnknownRuleKind  = policy.ReasonUnknownRuleKind
	ReasonRouteNotFound    = policy.ReasonRouteNotFound
	ReasonMatchNotFound    = policy.ReasonMatchNotFound
	ReasonMissingField     = policy.ReasonMissingField
	ReasonCrossNamespace   = policy.ReasonCrossNamespace
	ReasonInvalidRegex     = policy.ReasonInvalidRegex
	ReasonInvalidMethod    = policy.ReasonInvalidMethod
	ReasonInvalidPort      = policy.ReasonInvalidPort
	ReasonInvalidWeight    = policy.ReasonInvalidWeight
	ReasonZeroTotalWeight  = policy.ReasonZeroTotalWeight
	ReasonUnsupportedField = policy.ReasonUnsupportedField
)

// Rejection says why a policy object is rejected, naming the field at
// fault (policy.Rejection).
type Rejection = policy.Rejection

var reject = policy.Reject

// HTTPMatch is one validated HTTP match of an HTTPRouteGroup
// (policy.HTTPMatch, with the compiler's methods).
type HTTPMatch policy.HTTPMatch

// HeaderMatch is a request header whose value must match an RE2 regex.
type HeaderMatch = policy.HeaderMatch

// TCPMatch is the validated match of a TCPRoute.
type TCPMatch = policy.TCPMatch

// ValidateHTTPRouteGroup checks an HTTPRouteGroup (policy.HTTPRouteGroup)
// and returns its matches by name.
func ValidateHTTPRouteGroup(nn model.NN, g *meshv1.HTTPRouteGroup) (map[string]HTTPMatch, *Rejection) {
	ms, rej := policy.HTTPRouteGroup(nn.Namespace, nn.Name, g)
	if rej != nil {
		return nil, rej
	}
	out := make(map[string]HTTPMatch, len(ms))
	for name, m := range ms {
		out[name] = HTTPMatch(m)
	}
	return out, nil
}

// ValidateTCPRoute checks the ports of a TCPRoute (policy.TCPRoute).
func ValidateTCPRoute(r *meshv1.TCPRoute) (TCPMatch, *Rejection) { return policy.TCPRoute(r) }

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

// ResolveTrafficTarget validates a TrafficTarget (access v1alpha3, the
// checks of policy.TrafficTarget) and resolves its rules against the
// accepted route objects of its namespace.
func ResolveTrafficTarget(nn model.NN, tt *meshv1.TrafficTarget, routes RouteLookup) (*Target, *Rejection) {
	if rej := policy.TrafficTarget(nn.Namespace, tt); rej != nil {
		return nil, rej
	}
	t := &Target{Dest: model.Identity{Namespace: nn.Namespace, Name: tt.GetDestination().GetName()}}
	for _, s := range tt.GetSources() {
		ns := s.GetNamespace()
		if ns == "" {
			ns = nn.Namespace
		}
		t.Sources = append(t.Sources, model.Identity{Namespace: ns, Name: s.GetName()})
	}
	sort.Slice(t.Sources, func(a, b int) bool { return t.Sources[a].Less(t.Sources[b]) })
	t.Sources = dedupe(t.Sources)
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

// ValidateTrafficSplit validates a TrafficSplit (split v1alpha2, the checks
// of policy.TrafficSplit).
func ValidateTrafficSplit(nn model.NN, s *meshv1.TrafficSplit) (*Split, *Rejection) {
	if rej := policy.TrafficSplit(s); rej != nil {
		return nil, rej
	}
	out := &Split{Apex: model.ApexOf(nn.Namespace, s)}
	for _, b := range s.GetBackends() {
		out.Backends = append(out.Backends, Backend{Service: model.NN{Namespace: nn.Namespace, Name: b.GetService()}, Weight: uint32(b.GetWeight())})
	}
	return out, nil
}

func dedupe[T comparable](s []T) []T { return policy.Dedupe(s) }
