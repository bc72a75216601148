package compile

import (
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
	ReasonInvalidValue     = policy.ReasonInvalidValue
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

// ResolveTrafficTarget validates a TrafficTarget and resolves its rules
// against the accepted route objects of its namespace: libs/policy's
// ResolveTrafficTarget, which osm policy check applies too, so that both
// reject the same objects with the same words.
func ResolveTrafficTarget(nn model.NN, tt *meshv1.TrafficTarget, routes RouteLookup) (*Target, *Rejection) {
	pt, rej := policy.ResolveTrafficTarget(nn.Namespace, tt, routeLookup{routes})
	if rej != nil {
		return nil, rej
	}
	t := &Target{Dest: model.Identity(pt.Dest), HasHTTPRule: pt.HasHTTPRule, TCPAll: pt.TCPAll, TCPPorts: pt.TCPPorts}
	for _, s := range pt.Sources {
		t.Sources = append(t.Sources, model.Identity(s))
	}
	for _, m := range pt.HTTP {
		t.HTTP = append(t.HTTP, HTTPMatch(m))
	}
	return t, nil
}

// routeLookup is a RouteLookup as libs/policy reads it.
type routeLookup struct{ r RouteLookup }

func (l routeLookup) HTTPRouteGroup(namespace, name string) (map[string]policy.HTTPMatch, bool) {
	ms, ok := l.r.HTTPRouteGroup(model.NN{Namespace: namespace, Name: name})
	if !ok {
		return nil, false
	}
	out := make(map[string]policy.HTTPMatch, len(ms))
	for k, m := range ms {
		out[k] = policy.HTTPMatch(m)
	}
	return out, true
}

func (l routeLookup) TCPRoute(namespace, name string) (TCPMatch, bool) {
	return l.r.TCPRoute(model.NN{Namespace: namespace, Name: name})
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
