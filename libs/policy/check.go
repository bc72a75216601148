package policy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Reasons of a Check's Decision and of each of its Legs.
const (
	// CheckAllowed: an accepted TrafficTarget allows the request.
	CheckAllowed = "Allowed"
	// CheckPermissive: the MeshConfig's permissive mode allows every
	// request between meshed workloads.
	CheckPermissive = "PermissiveMode"
	// CheckServiceNotFound: the destination Service does not exist.
	CheckServiceNotFound = "ServiceNotFound"
	// CheckNotMeshed: the destination's (or the source's) namespace is not
	// in the mesh.
	CheckNotMeshed = "NamespaceNotInMesh"
	// CheckPortNotFound: the Service has no such TCP port, or several and
	// none was named.
	CheckPortNotFound = "PortNotFound"
	// CheckNoPods: no pod backs the Service, so it has no identity.
	CheckNoPods = "NoPods"
	// CheckNoTrafficTarget: no TrafficTarget names the destination identity.
	CheckNoTrafficTarget = "NoTrafficTarget"
	// CheckTargetRejected: the TrafficTargets that would allow the source
	// are rejected.
	CheckTargetRejected = "TrafficTargetRejected"
	// CheckSourceNotAllowed: accepted TrafficTargets name the destination,
	// none the source.
	CheckSourceNotAllowed = "SourceNotAllowed"
	// CheckRouteNotMatched: no route of the destination's port matches the
	// request, or the first one matching does not allow the source.
	CheckRouteNotMatched = "RouteNotMatched"
)

// Request is what Check decides on: may Source send this request to the
// Service's port?
type Request struct {
	// Source is the client's identity.
	Source Identity
	// ServiceNamespace and Service name the destination Service.
	ServiceNamespace, Service string
	// Port is the Service's port, by number or name; empty: the Service's
	// only TCP port.
	Port string
	// Path and Method of an HTTP request; empty: any.
	Path, Method string
}

// Mesh is what Check reads: the mesh's view of the destination namespace,
// the objects as the smi-watcher normalises them (libs/smi).
type Mesh struct {
	// Permissive is the MeshConfig's enablePermissiveTrafficPolicyMode;
	// MeshConfig names that MeshConfig ("namespace/name") in messages.
	Permissive bool
	MeshConfig string
	// Meshed are the namespaces in the mesh.
	Meshed map[string]bool
	// Services of the destination namespace.
	Services []Service
	// The SMI objects of the destination namespace.
	TrafficTargets  []*meshv1.TrafficTarget
	HTTPRouteGroups []*meshv1.HTTPRouteGroup
	TCPRoutes       []*meshv1.TCPRoute
	TrafficSplits   []*meshv1.TrafficSplit
}

// Service is a Service and the identities of the pods it selects.
type Service struct {
	Namespace, Name string
	// Ports are its TCP ports, with the number of each target port.
	Ports []ServicePort
	// Identities run the pods the Service selects, sorted.
	Identities []Identity
}

// ServicePort is one TCP port of a Service.
type ServicePort struct {
	Name             string
	Port, TargetPort int32
	Protocol         Protocol
}

// Decision is Check's answer.
type Decision struct {
	// Allowed is true when every leg is allowed.
	Allowed bool `json:"allowed"`
	// Reason is the first denied leg's reason, else Allowed or
	// PermissiveMode (or the reason no leg could be built).
	Reason string `json:"reason"`
	// Message says why in a sentence.
	Message string `json:"message"`
	// Legs are the identities the request may land on: the Service's, or
	// the backends' of the TrafficSplit whose apex it is.
	Legs []Leg `json:"destinations,omitempty"`
	// Rejected are the policy objects concerning the destinations that the
	// mesh rejects, with the field at fault.
	Rejected []Rejected `json:"rejected,omitempty"`
}

// Leg is the decision for one destination identity.
type Leg struct {
	// Identity, Service, Port, TargetPort and Protocol: where the request
	// lands.
	Identity   string `json:"identity"`
	Service    string `json:"service"`
	Port       int32  `json:"port"`
	TargetPort int32  `json:"targetPort"`
	Protocol   string `json:"protocol"`
	Allowed    bool   `json:"allowed"`
	Reason     string `json:"reason"`
	// TrafficTarget ("namespace/name") and Route (the HTTPRouteGroup
	// match "ns/group/match", or the TCPRoute) that allow it.
	TrafficTarget string `json:"trafficTarget,omitempty"`
	Route         string `json:"route,omitempty"`
	Message       string `json:"message"`
}

// Rejected is a rejected policy object, as the compiler's PolicyStatus
// says it.
type Rejected struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
	FieldPath string `json:"fieldPath"`
	Message   string `json:"message"`
}

// routes are the accepted routes of one namespace, and the rejected ones.
type routes struct {
	hrg      map[string]map[string]HTTPMatch
	tcp      map[string]TCPMatch
	rejected map[string]Rejected // "kind/name" →
}

func (r *routes) HTTPRouteGroup(_, name string) (map[string]HTTPMatch, bool) {
	m, ok := r.hrg[name]
	return m, ok
}

func (r *routes) TCPRoute(_, name string) (TCPMatch, bool) {
	m, ok := r.tcp[name]
	return m, ok
}

var _ RouteLookup = (*routes)(nil)

func rejected(kind, ns, name string, rej *Rejection) Rejected {
	return Rejected{Kind: kind, Namespace: ns, Name: name, Reason: rej.Reason, FieldPath: rej.FieldPath, Message: Verdict(kind, ns, name, rej)}
}

// target is a TrafficTarget with its verdict.
type target struct {
	name string // namespace/name
	t    *Target
	rej  *Rejected
	// destName and sources as written, for a rejected target, and the
	// rejections of the routes its rules name.
	destName  string
	sources   []Identity
	routeRejs []Rejected
}

// Check decides whether the request is allowed by the mesh's policies, as
// the policy-compiler compiles them into the destination's inbound
// listener: the same rules (TrafficTarget, HTTPRouteGroup, TCPRoute,
// TrafficSplit, with their rejections), the same order of HTTP routes
// (specific matches first, by key; the first match decides), OSM's rule
// that a TrafficTarget with an HTTP rule allows the destination's plain
// TCP ports, and permissive mode.
//
// One difference: a rejected object counts here as absent, whereas the
// compiler keeps serving its last accepted version. Check reads the
// Kubernetes objects only; that version is kept by the policy-compiler
// (in memory, and in KV mesh-compiled under accepted.<kind>.<ns>.<name>
// so that a restarted compiler or a new leader serves it too), and the
// rejection's Warning Event says the object is rejected.
func Check(m *Mesh, req Request) Decision {
	svcName := req.ServiceNamespace + "/" + req.Service
	deny := func(reason, format string, args ...any) Decision {
		return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	var svc *Service
	for i := range m.Services {
		if m.Services[i].Namespace == req.ServiceNamespace && m.Services[i].Name == req.Service {
			svc = &m.Services[i]
		}
	}
	if svc == nil {
		return deny(CheckServiceNotFound, "Service %s not found", svcName)
	}
	if !m.Meshed[req.ServiceNamespace] {
		return deny(CheckNotMeshed, "namespace %s of Service %s is not in the mesh: its pods have no proxy (osm namespace add %s)", req.ServiceNamespace, svcName, req.ServiceNamespace)
	}
	if !m.Meshed[req.Source.Namespace] {
		return deny(CheckNotMeshed, "namespace %s of the source %s is not in the mesh: its pods have no proxy and no identity, and the destination accepts only mTLS (osm namespace add %s)", req.Source.Namespace, req.Source, req.Source.Namespace)
	}
	port, err := pickPort(svc, req.Port)
	if err != nil {
		return deny(CheckPortNotFound, "%s", err)
	}

	rt := acceptRoutes(m)
	var targets []target
	for _, tt := range m.TrafficTargets {
		ns, name := tt.GetMeta().GetNamespace(), tt.GetMeta().GetName()
		x := target{name: ns + "/" + name, destName: tt.GetDestination().GetName()}
		t, rej := ResolveTrafficTarget(ns, tt, rt)
		if rej != nil {
			r := rejected("TrafficTarget", ns, name, rej)
			x.rej = &r
			for _, s := range tt.GetSources() {
				sns := s.GetNamespace()
				if sns == "" {
					sns = ns
				}
				x.sources = append(x.sources, Identity{Namespace: sns, Name: s.GetName()})
			}
			for _, r := range tt.GetRules() {
				if rr, ok := rt.rejected[r.GetKind()+"/"+r.GetName()]; ok {
					x.routeRejs = append(x.routeRejs, rr)
				}
			}
		}
		x.t = t
		targets = append(targets, x)
	}
	sort.Slice(targets, func(a, b int) bool { return targets[a].name < targets[b].name })

	d := Decision{Allowed: true}
	seenRej := map[string]bool{}
	addRej := func(r Rejected) {
		if k := r.Kind + "/" + r.Namespace + "/" + r.Name; !seenRej[k] {
			seenRej[k] = true
			d.Rejected = append(d.Rejected, r)
		}
	}
	legs, splitMsg := legsOf(m, svc, port)
	if len(legs) == 0 {
		return deny(CheckNoPods, "no running pod with a ServiceAccount backs Service %s%s: the mesh knows no identity to deliver to", svcName, splitMsg)
	}
	for _, l := range legs {
		id := Identity{Namespace: l.svc.Namespace, Name: l.id}
		var mine []target
		for _, x := range targets {
			if x.destName == id.Name && strings.HasPrefix(x.name, id.Namespace+"/") {
				mine = append(mine, x)
				if x.rej != nil {
					addRej(*x.rej)
					for _, r := range x.routeRejs {
						addRej(r)
					}
				}
			}
		}
		leg := evaluate(m, req, id, l, mine)
		d.Legs = append(d.Legs, leg)
		if !leg.Allowed && d.Allowed {
			d.Allowed, d.Reason, d.Message = false, leg.Reason, leg.Message
		}
	}
	if d.Allowed {
		d.Reason, d.Message = d.Legs[0].Reason, d.Legs[0].Message
		if len(d.Legs) > 1 {
			d.Message = fmt.Sprintf("every one of the %d destinations allows it%s", len(d.Legs), splitMsg)
		}
	}
	return d
}

// acceptRoutes judges the route objects with the shared rules.
func acceptRoutes(m *Mesh) *routes {
	rt := &routes{hrg: map[string]map[string]HTTPMatch{}, tcp: map[string]TCPMatch{}, rejected: map[string]Rejected{}}
	for _, g := range m.HTTPRouteGroups {
		ns, name := g.GetMeta().GetNamespace(), g.GetMeta().GetName()
		ms, rej := HTTPRouteGroup(ns, name, g)
		if rej != nil {
			rt.rejected[RuleKindHTTPRouteGroup+"/"+name] = rejected(RuleKindHTTPRouteGroup, ns, name, rej)
			continue
		}
		rt.hrg[name] = ms
	}
	for _, r := range m.TCPRoutes {
		ns, name := r.GetMeta().GetNamespace(), r.GetMeta().GetName()
		tm, rej := TCPRoute(r)
		if rej != nil {
			rt.rejected[RuleKindTCPRoute+"/"+name] = rejected(RuleKindTCPRoute, ns, name, rej)
			continue
		}
		rt.tcp[name] = tm
	}
	return rt
}

// pickPort finds the Service's port named by number or name, or its only
// port when none is named.
func pickPort(svc *Service, want string) (ServicePort, error) {
	name := svc.Namespace + "/" + svc.Name
	if want == "" {
		if len(svc.Ports) == 1 {
			return svc.Ports[0], nil
		}
		var ps []string
		for _, p := range svc.Ports {
			ps = append(ps, portString(p))
		}
		if len(ps) == 0 {
			return ServicePort{}, fmt.Errorf("Service %s has no TCP port", name)
		}
		return ServicePort{}, fmt.Errorf("Service %s has the ports %s: name one (%s:PORT)", name, strings.Join(ps, ", "), name)
	}
	n, numErr := strconv.Atoi(want)
	for _, p := range svc.Ports {
		if (numErr == nil && int(p.Port) == n) || (p.Name != "" && p.Name == want) {
			return p, nil
		}
	}
	var ps []string
	for _, p := range svc.Ports {
		ps = append(ps, portString(p))
	}
	return ServicePort{}, fmt.Errorf("Service %s has no TCP port %s (it has %s)", name, want, strings.Join(ps, ", "))
}

func portString(p ServicePort) string {
	if p.Name != "" {
		return fmt.Sprintf("%d (%s)", p.Port, p.Name)
	}
	return strconv.Itoa(int(p.Port))
}

// leg is one identity behind one service port.
type leg struct {
	svc  *Service
	port ServicePort
	id   string
}

// legsOf are the identities a request to svc's port lands on: those of the
// backends (with a weight) of a valid TrafficSplit whose apex svc is, on
// their port of the same number, otherwise svc's own.
func legsOf(m *Mesh, svc *Service, port ServicePort) ([]leg, string) {
	byName := map[string]*Service{}
	for i := range m.Services {
		byName[m.Services[i].Name] = &m.Services[i]
	}
	var splits []*meshv1.TrafficSplit
	for _, s := range m.TrafficSplits {
		if s.GetMeta().GetNamespace() == svc.Namespace && apexName(s.GetService()) == svc.Name && TrafficSplit(s) == nil {
			splits = append(splits, s)
		}
	}
	sort.Slice(splits, func(a, b int) bool { return splits[a].GetMeta().GetName() < splits[b].GetMeta().GetName() })
	var out []leg
	if len(splits) > 0 {
		// The compiler splits by the first split of the apex, by name.
		s := splits[0]
		for _, b := range s.GetBackends() {
			bs := byName[b.GetService()]
			if b.GetWeight() == 0 || bs == nil {
				continue
			}
			for _, p := range bs.Ports {
				if p.Port == port.Port {
					for _, id := range bs.Identities {
						out = append(out, leg{svc: bs, port: p, id: id.Name})
					}
				}
			}
		}
		return out, fmt.Sprintf(" (through TrafficSplit %s/%s)", svc.Namespace, s.GetMeta().GetName())
	}
	for _, id := range svc.Identities {
		out = append(out, leg{svc: svc, port: port, id: id.Name})
	}
	return out, ""
}

// apexName is the apex Service's name of a TrafficSplit's spec.service,
// which may be written as a DNS name ("bookstore.ns.svc.cluster.local").
func apexName(s string) string {
	name, _, _ := strings.Cut(s, ".")
	return name
}

// evaluate decides one leg against the TrafficTargets naming its identity.
func evaluate(m *Mesh, req Request, id Identity, l leg, mine []target) Leg {
	out := Leg{Identity: id.String(), Service: l.svc.Namespace + "/" + l.svc.Name, Port: l.port.Port, TargetPort: l.port.TargetPort, Protocol: string(l.port.Protocol)}
	deny := func(reason, format string, args ...any) Leg {
		out.Reason, out.Message = reason, fmt.Sprintf(format, args...)
		return out
	}
	if m.Permissive {
		out.Allowed = true
		mc := "the MeshConfig"
		if m.MeshConfig != "" {
			mc = "MeshConfig " + m.MeshConfig
		}
		return deny(CheckPermissive, "%s enables permissive traffic policy mode: every meshed workload may reach every other, TrafficTargets are not enforced", mc)
	}
	var accepted []target
	var rejectedForSrc []string
	for _, x := range mine {
		if x.t != nil {
			accepted = append(accepted, x)
		} else {
			for _, s := range x.sources {
				if s == req.Source {
					rejectedForSrc = append(rejectedForSrc, x.rej.Message)
					break
				}
			}
		}
	}
	notAllowed := func() Leg {
		switch {
		case len(rejectedForSrc) > 0:
			return deny(CheckTargetRejected, "%s", strings.Join(rejectedForSrc, "; "))
		case len(mine) == 0:
			return deny(CheckNoTrafficTarget, "no TrafficTarget in namespace %s has the destination %s", id.Namespace, id)
		case len(accepted) == 0:
			return deny(CheckTargetRejected, "every TrafficTarget with the destination %s is rejected", id)
		}
		var names []string
		for _, x := range accepted {
			names = append(names, x.name)
		}
		return deny(CheckSourceNotAllowed, "no TrafficTarget with the destination %s lists the source %s (%s)", id, req.Source, strings.Join(names, ", "))
	}

	if !l.port.Protocol.IsHTTP() {
		for _, x := range accepted {
			if !x.t.AllowsSource(req.Source) {
				continue
			}
			if x.t.AllowsTCPPort(l.port.TargetPort) {
				for _, r := range x.t.TCPRoutes {
					if len(r.Ports) == 0 || containsPort(r.Ports, l.port.TargetPort) {
						out.TrafficTarget, out.Route, out.Allowed = x.name, "TCPRoute "+id.Namespace+"/"+r.Name, true
						return deny(CheckAllowed, "TrafficTarget %s allows %s to port %d through TCPRoute %s", x.name, req.Source, l.port.TargetPort, r.Name)
					}
				}
			}
			if x.t.HasHTTPRule {
				out.TrafficTarget, out.Route, out.Allowed = x.name, "HTTPRouteGroup rule (any TCP)", true
				return deny(CheckAllowed, "TrafficTarget %s has an HTTPRouteGroup rule, which allows %s plain TCP to port %d (a %s port)", x.name, req.Source, l.port.TargetPort, l.port.Protocol)
			}
		}
		for _, x := range accepted {
			if x.t.AllowsSource(req.Source) {
				return deny(CheckRouteNotMatched, "TrafficTarget %s allows %s, but none of its TCPRoutes matches port %d", x.name, req.Source, l.port.TargetPort)
			}
		}
		return notAllowed()
	}

	routes := inboundRoutes(accepted, l.port.TargetPort)
	allows := func(r inboundRoute) (string, bool) {
		for _, name := range r.targets {
			for _, x := range accepted {
				if x.name == name && x.t.AllowsSource(req.Source) {
					return name, true
				}
			}
		}
		return "", false
	}
	if req.Path == "" && req.Method == "" {
		for _, r := range routes {
			if name, ok := allows(r); ok {
				out.TrafficTarget, out.Route, out.Allowed = name, r.describe(id.Namespace), true
				return deny(CheckAllowed, "TrafficTarget %s allows %s through %s (no path or method given: the first route allowing the source)", name, req.Source, r.describe(id.Namespace))
			}
		}
		return notAllowed()
	}
	path, _, _ := strings.Cut(req.Path, "?")
	for _, r := range routes {
		if !r.match.matches(path, req.Method) {
			continue
		}
		// Envoy takes the first route matching; its RBAC decides.
		if name, ok := allows(r); ok {
			out.TrafficTarget, out.Route, out.Allowed = name, r.describe(id.Namespace), true
			return deny(CheckAllowed, "TrafficTarget %s allows %s %s through %s", name, req.Source, requestString(req), r.describe(id.Namespace))
		}
		if hasSource(accepted, req.Source) {
			out.Route = r.describe(id.Namespace)
			return deny(CheckRouteNotMatched, "the first route matching %s is %s, which only TrafficTarget %s allows, not for %s", requestString(req), r.describe(id.Namespace), strings.Join(r.targets, ", "), req.Source)
		}
		return notAllowed()
	}
	if hasSource(accepted, req.Source) {
		var keys []string
		for _, r := range routes {
			for _, name := range r.targets {
				if x := find(accepted, name); x != nil && x.t.AllowsSource(req.Source) {
					keys = append(keys, r.describe(id.Namespace))
					break
				}
			}
		}
		return deny(CheckRouteNotMatched, "no route to %s on port %d matches %s; %s may use %s", id, l.port.TargetPort, requestString(req), req.Source, strings.Join(keys, ", "))
	}
	return notAllowed()
}

func requestString(req Request) string {
	var parts []string
	if req.Method != "" {
		parts = append(parts, strings.ToUpper(req.Method))
	}
	if req.Path != "" {
		parts = append(parts, req.Path)
	}
	return strings.Join(parts, " ")
}

func hasSource(ts []target, src Identity) bool {
	for _, x := range ts {
		if x.t.AllowsSource(src) {
			return true
		}
	}
	return false
}

func find(ts []target, name string) *target {
	for i := range ts {
		if ts[i].name == name {
			return &ts[i]
		}
	}
	return nil
}

func containsPort(ps []int32, p int32) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// inboundRoute is one HTTP route of the destination's port and the
// TrafficTargets allowing it.
type inboundRoute struct {
	match   HTTPMatch
	targets []string
}

func (r inboundRoute) describe(ns string) string {
	if r.match.Key == "*" {
		return "any request (a TCPRoute allowing the port)"
	}
	group, match, _ := strings.Cut(strings.TrimPrefix(r.match.Key, ns+"/"), "/")
	return fmt.Sprintf("HTTPRouteGroup %s/%s match %s", ns, group, match)
}

// inboundRoutes are the routes of an HTTP port in the order the compiler
// writes them (services/policy-compiler, inboundRoutes): one per distinct
// match of the targets' HTTPRouteGroups, a wildcard for a target allowing
// the port over TCP, specific matches first, then by key.
func inboundRoutes(targets []target, targetPort int32) []inboundRoute {
	byKey := map[string]int{}
	var out []inboundRoute
	add := func(m HTTPMatch, name string) {
		i, ok := byKey[m.Key]
		if !ok {
			i = len(out)
			byKey[m.Key] = i
			out = append(out, inboundRoute{match: m})
		}
		out[i].targets = append(out[i].targets, name)
	}
	for _, x := range targets {
		for _, m := range x.t.HTTP {
			add(m, x.name)
		}
		if x.t.AllowsTCPPort(targetPort) {
			add(HTTPMatch{Key: "*"}, x.name)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		wi, wj := out[i].match.wildcard(), out[j].match.wildcard()
		if wi != wj {
			return wj
		}
		return out[i].match.Key < out[j].match.Key
	})
	return out
}

func (m HTTPMatch) wildcard() bool {
	return m.PathRegex == "" && len(m.Methods) == 0 && len(m.Headers) == 0
}

// matches reports whether a request with this path and method (empty: not
// given, matched by anything) matches, as Envoy matches the route: the
// whole path against the regex, the method among the methods. A match that
// needs headers does not match a request that has none.
func (m HTTPMatch) matches(path, method string) bool {
	if len(m.Headers) > 0 {
		return false
	}
	if m.PathRegex != "" && path != "" {
		re, err := regexp.Compile("^(?:" + m.PathRegex + ")$")
		if err != nil || !re.MatchString(path) {
			return false
		}
	}
	if len(m.Methods) > 0 && method != "" {
		up := strings.ToUpper(method)
		for _, x := range m.Methods {
			if x == up {
				return true
			}
		}
		return false
	}
	return true
}
