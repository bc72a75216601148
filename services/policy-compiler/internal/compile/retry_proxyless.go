package compile

import (
	"slices"
	"strings"

	"github.com/openservicemesh/osm/libs/policy"
)

// Reasons of a Retry accepted with a warning because proxyless gRPC
// clients cannot follow all of its retryOn conditions.
const (
	// ReasonRetryOnIgnoredByProxylessGRPC: some of the conditions are
	// HTTP ones, which gRPC-Go leaves out; it retries on the others.
	ReasonRetryOnIgnoredByProxylessGRPC = "RetryOnIgnoredByProxylessGRPC"
	// ReasonRetryDoesNothingForProxylessGRPC: none of the conditions is a
	// gRPC status, so proxyless gRPC clients do not retry at all.
	ReasonRetryDoesNothingForProxylessGRPC = "RetryDoesNothingForProxylessGRPC"
)

// retryOnPath is the field a Retry's conditions are written in.
const retryOnPath = "spec.retryPolicy.retryOn"

// retryWarning judges an accepted Retry for the gRPC flavour
// (Options.ProxylessGRPC): gRPC-Go's xDS client reads only the gRPC status
// conditions of retry_on (policy.RetryOnGRPC; gRFC A44), so the HTTP ones
// (5xx, reset, connect-failure, gateway-error, ...) cannot apply to the
// source's proxyless clients, whose gRPC group gets the Retry's route copy
// without them (grpcRetryPolicy). The Retry is still accepted, since the
// source's Envoy sidecars retry on every condition; the warning names the
// field and the conditions left out, or says the Retry does nothing for
// those clients when no condition is left. Nil without the flavour or
// when every condition is gRPC's.
//
// The warning is a fact about the object and the compiler's flavour,
// judged with the object: whether the source has proxyless pods, or
// reaches the destinations yet, does not change it.
func (e *Engine) retryWarning(r *policy.AcceptedRetry) *Rejection {
	if !e.opts.ProxylessGRPC || r == nil {
		return nil
	}
	return proxylessRetryWarning(r)
}

// proxylessRetryWarning is retryWarning's judgement of r, flavour aside.
func proxylessRetryWarning(r *policy.AcceptedRetry) *Rejection {
	var kept, dropped []string
	for _, c := range r.Policy.RetryOn {
		if slices.Contains(policy.RetryOnGRPC, c) {
			kept = append(kept, c)
		} else {
			dropped = append(dropped, c)
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	src := "ServiceAccount " + r.Source.Namespace + "/" + r.Source.Name
	why := "gRPC-Go retries on gRPC status codes only (" + strings.Join(policy.RetryOnGRPC, ", ") + ")"
	if len(kept) == 0 {
		return reject(ReasonRetryDoesNothingForProxylessGRPC, retryOnPath,
			"none of %s applies to proxyless gRPC clients of %s, so this Retry does nothing for them: %s; its Envoy sidecars retry as written",
			strings.Join(dropped, ", "), src, why)
	}
	return reject(ReasonRetryOnIgnoredByProxylessGRPC, retryOnPath,
		"%s dropped for proxyless gRPC clients of %s, which retry on %s only: %s; its Envoy sidecars retry on every condition",
		strings.Join(dropped, ", "), src, strings.Join(kept, ", "), why)
}
