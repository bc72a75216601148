package policy

import (
	"fmt"
	"sort"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Identity is a workload identity: a ServiceAccount.
type Identity struct {
	// Namespace and Name of the ServiceAccount.
	Namespace, Name string
}

// String is "namespace/serviceaccount".
func (i Identity) String() string { return i.Namespace + "/" + i.Name }

func (i Identity) less(o Identity) bool {
	if i.Namespace != o.Namespace {
		return i.Namespace < o.Namespace
	}
	return i.Name < o.Name
}

// Protocol is the application protocol of a service port.
type Protocol string

// The protocols the mesh knows.
const (
	ProtocolTCP  Protocol = "tcp"
	ProtocolHTTP Protocol = "http"
	ProtocolGRPC Protocol = "grpc"
)

// IsHTTP reports whether the protocol is served through an HTTP connection
// manager (and so authorized per route).
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolGRPC }

// ProtocolOf is the protocol of a service port, as the policy-compiler
// reads it: its appProtocol when that is http, grpc or tcp
// (kubernetes.io/h2c counts as grpc), otherwise the prefix of its name
// ("http", "http-web", "grpc-api"), otherwise tcp.
func ProtocolOf(appProtocol, portName string) Protocol {
	switch strings.ToLower(appProtocol) {
	case "http":
		return ProtocolHTTP
	case "grpc", "kubernetes.io/h2c":
		return ProtocolGRPC
	case "tcp":
		return ProtocolTCP
	}
	prefix, _, _ := strings.Cut(strings.ToLower(portName), "-")
	switch prefix {
	case "http":
		return ProtocolHTTP
	case "grpc":
		return ProtocolGRPC
	}
	return ProtocolTCP
}

// Target is a valid TrafficTarget with its rules resolved against the
// accepted routes of its namespace.
type Target struct {
	// Dest is the identity receiving the traffic.
	Dest Identity
	// Sources may send traffic to Dest, sorted.
	Sources []Identity
	// HTTP are the allowed HTTP matches, sorted by key.
	HTTP []HTTPMatch
	// HasHTTPRule is true when a rule names an HTTPRouteGroup; such a
	// target also allows plain TCP ports of Dest (OSM's behaviour).
	HasHTTPRule bool
	// TCPAll is true when a TCPRoute rule allows every port.
	TCPAll bool
	// TCPPorts are the ports TCPRoute rules allow, sorted.
	TCPPorts []int32
	// TCPRoutes are the TCPRoute rules, in the order written, with the
	// ports each allows (none: every port).
	TCPRoutes []TCPRule
}

// TCPRule is one TCPRoute rule of a TrafficTarget.
type TCPRule struct {
	// Name of the TCPRoute; Ports it matches (empty: every port).
	Name  string
	Ports []int32
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

// AllowsSource reports whether src is among the target's sources.
func (t *Target) AllowsSource(src Identity) bool {
	for _, s := range t.Sources {
		if s == src {
			return true
		}
	}
	return false
}

// RouteLookup finds the accepted version of a route object.
type RouteLookup interface {
	// HTTPRouteGroup returns the matches of an accepted HTTPRouteGroup.
	HTTPRouteGroup(namespace, name string) (map[string]HTTPMatch, bool)
	// TCPRoute returns the match of an accepted TCPRoute.
	TCPRoute(namespace, name string) (TCPMatch, bool)
}

// ResolveTrafficTarget validates the TrafficTarget (access v1alpha3) in
// namespace (the checks of TrafficTarget) and resolves its rules against
// the accepted route objects of its namespace, rejecting a rule whose route
// or match does not exist, with the policy-compiler's words.
func ResolveTrafficTarget(namespace string, tt *meshv1.TrafficTarget, routes RouteLookup) (*Target, *Rejection) {
	if rej := TrafficTarget(namespace, tt); rej != nil {
		return nil, rej
	}
	t := &Target{Dest: Identity{Namespace: namespace, Name: tt.GetDestination().GetName()}}
	for _, s := range tt.GetSources() {
		ns := s.GetNamespace()
		if ns == "" {
			ns = namespace
		}
		t.Sources = append(t.Sources, Identity{Namespace: ns, Name: s.GetName()})
	}
	sort.Slice(t.Sources, func(a, b int) bool { return t.Sources[a].less(t.Sources[b]) })
	t.Sources = Dedupe(t.Sources)
	seen := map[string]bool{}
	for i, r := range tt.GetRules() {
		path := fmt.Sprintf("spec.rules[%d]", i)
		switch r.GetKind() {
		case RuleKindHTTPRouteGroup:
			matches, ok := routes.HTTPRouteGroup(namespace, r.GetName())
			if !ok {
				return nil, Reject(ReasonRouteNotFound, path+".name", "HTTPRouteGroup %q not found (or rejected) in namespace %q", r.GetName(), namespace)
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
					return nil, Reject(ReasonMatchNotFound, fmt.Sprintf("%s.matches[%d]", path, j), "HTTPRouteGroup %q has no match named %q", r.GetName(), name)
				}
				if !seen[m.Key] {
					seen[m.Key] = true
					t.HTTP = append(t.HTTP, m)
				}
			}
		case RuleKindTCPRoute:
			m, ok := routes.TCPRoute(namespace, r.GetName())
			if !ok {
				return nil, Reject(ReasonRouteNotFound, path+".name", "TCPRoute %q not found (or rejected) in namespace %q", r.GetName(), namespace)
			}
			if len(m.Ports) == 0 {
				t.TCPAll = true
			}
			t.TCPPorts = append(t.TCPPorts, m.Ports...)
			t.TCPRoutes = append(t.TCPRoutes, TCPRule{Name: r.GetName(), Ports: m.Ports})
		}
	}
	sort.Slice(t.HTTP, func(a, b int) bool { return t.HTTP[a].Key < t.HTTP[b].Key })
	sort.Slice(t.TCPPorts, func(a, b int) bool { return t.TCPPorts[a] < t.TCPPorts[b] })
	t.TCPPorts = Dedupe(t.TCPPorts)
	if t.TCPAll {
		t.TCPPorts = nil
	}
	return t, nil
}
