// Package policy holds the rules that decide whether a mesh policy object
// (the SMI kinds TrafficTarget, HTTPRouteGroup, TCPRoute and TrafficSplit,
// and OSM's Retry, Egress, UpstreamTrafficSetting and IngressBackend) is valid, in its contract form (proto/osm/mesh/v1), and the words of a
// rejection (Rejection, the reasons, Verdict), which MeshConfig's rules
// (meshconfig.Validate, beside its parser) use too. It is pure: no I/O, no
// other object consulted, and no Kubernetes dependency, so the
// policy-compiler links it alone. The policy-compiler publishes
// its verdicts as PolicyStatus (and the smi-watcher as Events); the
// injector-webhook's validating webhook refuses the same objects at
// admission. Both take their words from here, so a user reads the same
// reason, field path and message whichever caught the object.
//
// A rule that needs another object (a TrafficTarget naming an
// HTTPRouteGroup that does not exist yet, ResolveTrafficTarget) is the
// compiler's alone: at admission the objects of one apply arrive in any
// order.
//
// Check answers "may this identity send this request to that Service?"
// from the same rules over a snapshot of the mesh's objects, for osm policy
// check.
package policy

import (
	"fmt"
	"strings"
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
	ReasonInvalidValue     = "InvalidValue"
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

// Reject returns a Rejection of the field at path; its message is the path
// followed by the formatted explanation.
func Reject(reason, path, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, FieldPath: path, Message: path + ": " + fmt.Sprintf(format, args...)}
}

// Verdict is the message users read about the object kind namespace/name:
// "<Kind> <ns>/<name> rejected: <field>: <why>", or "<Kind> <ns>/<name> is
// valid" when rej is nil. The compiler's PolicyStatus and the webhook's
// denial both carry it.
func Verdict(kind, namespace, name string, rej *Rejection) string {
	obj := kind + " " + namespace + "/" + name
	if rej == nil {
		return obj + " is valid"
	}
	return obj + " rejected: " + rej.Message
}

// warnedVerdict is what the message of an object accepted with a warning
// says after its name.
const warnedVerdict = " accepted with a warning: "

// Warned is the message users read about the object kind namespace/name,
// valid and applied, of which the part warn names does not take effect
// everywhere: "<Kind> <ns>/<name> accepted with a warning: <field>: <why>".
// The compiler's PolicyStatus carries it, and the smi-watcher's Warning
// Event; IsWarned tells it from a rejection.
func Warned(kind, namespace, name string, warn *Rejection) string {
	return kind + " " + namespace + "/" + name + warnedVerdict + warn.Message
}

// IsWarned reports whether msg (an Event's message, which may add to it)
// is a Warned verdict, not a rejection.
func IsWarned(msg string) bool {
	before, _, ok := strings.Cut(msg, warnedVerdict)
	return ok && !strings.Contains(before, ":")
}
