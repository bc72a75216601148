package policy

import (
	"fmt"
	"math"
	"strings"
	"time"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Kinds a Retry names.
const (
	KindService = "Service"
)

// Retry reasons.
const (
	ReasonInvalidRetryOn   = "InvalidRetryOn"
	ReasonInvalidDuration  = "InvalidDuration"
	ReasonInvalidFieldType = "InvalidFieldType"
)

// RetryOnHTTP are Envoy's retry_on conditions of HTTP routers
// (x-envoy-retry-on); RetryOnGRPC those of gRPC (x-envoy-retry-grpc-on),
// which gRPC-Go's xDS client also reads (gRFC A44).
var (
	RetryOnHTTP = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
		"envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
		"retriable-headers", "http3-post-connect-failure"}
	RetryOnGRPC = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)

var retryOn = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range append(append([]string{}, RetryOnHTTP...), RetryOnGRPC...) {
		m[t] = true
	}
	return m
}()

// RetryPolicy is the accepted retry policy of a Retry.
type RetryPolicy struct {
	// RetryOn are the conditions, in the order written, without repeats.
	RetryOn []string
	// PerTryTimeout bounds one attempt; 0: Envoy's default (the route's).
	PerTryTimeout time.Duration
	// NumRetries is the maximum number of retries; nil: Envoy's default (1).
	NumRetries *uint32
	// BackoffBase is the backoff's base interval; 0: Envoy's default (25 ms).
	BackoffBase time.Duration
}

// Subject is a namespaced name a Retry points at.
type Subject struct {
	// Namespace and Name of the ServiceAccount or Service.
	Namespace, Name string
}

// AcceptedRetry is a valid Retry: the source identity, the destination
// Services and the policy.
type AcceptedRetry struct {
	// Source is the ServiceAccount whose proxies retry.
	Source Subject
	// Destinations are the Services retried, in the order written, without
	// repeats.
	Destinations []Subject
	// Policy is how they retry.
	Policy RetryPolicy
}

// Retry checks a Retry (policy.openservicemesh.io/v1alpha1) in namespace:
// a ServiceAccount source with a name, at least one destination, each a
// Service with a name, retryOn a comma-separated list of Envoy's
// conditions, numRetries not negative, and durations that parse and are
// not negative. A namespace left empty is the Retry's own. Whether the
// source and the destinations exist is not checked: a Retry may come
// before them, and applies once they do.
func Retry(namespace string, r *meshv1.Retry) (*AcceptedRetry, *Rejection) {
	if f := r.GetInvalidFields(); len(f) > 0 {
		return nil, Reject(ReasonInvalidFieldType, f[0].GetFieldPath(), "%s (got %q)", f[0].GetMessage(), f[0].GetValue())
	}
	out := &AcceptedRetry{}
	src := r.GetSource()
	if src.GetKind() != KindServiceAccount {
		return nil, Reject(ReasonInvalidKind, "spec.source.kind", "kind %q is not supported, want %q", src.GetKind(), KindServiceAccount)
	}
	if src.GetName() == "" {
		return nil, Reject(ReasonMissingField, "spec.source.name", "the source ServiceAccount needs a name")
	}
	out.Source = Subject{Namespace: orDefault(src.GetNamespace(), namespace), Name: src.GetName()}
	if len(r.GetDestinations()) == 0 {
		return nil, Reject(ReasonMissingField, "spec.destinations", "at least one destination Service is required")
	}
	seen := map[Subject]bool{}
	for i, d := range r.GetDestinations() {
		path := fmt.Sprintf("spec.destinations[%d]", i)
		if d.GetKind() != KindService {
			return nil, Reject(ReasonInvalidKind, path+".kind", "kind %q is not supported, want %q", d.GetKind(), KindService)
		}
		if d.GetName() == "" {
			return nil, Reject(ReasonMissingField, path+".name", "the destination Service needs a name")
		}
		s := Subject{Namespace: orDefault(d.GetNamespace(), namespace), Name: d.GetName()}
		if !seen[s] {
			seen[s] = true
			out.Destinations = append(out.Destinations, s)
		}
	}
	p, rej := retryPolicy(r.GetRetryPolicy())
	if rej != nil {
		return nil, rej
	}
	out.Policy = p
	return out, nil
}

func retryPolicy(rp *meshv1.RetryPolicySpec) (RetryPolicy, *Rejection) {
	var out RetryPolicy
	const path = "spec.retryPolicy"
	if strings.TrimSpace(rp.GetRetryOn()) == "" {
		return out, Reject(ReasonMissingField, path+".retryOn", "at least one retry condition is required, e.g. %q", "5xx")
	}
	seen := map[string]bool{}
	for _, tok := range strings.Split(rp.GetRetryOn(), ",") {
		t := strings.TrimSpace(tok)
		if !retryOn[t] {
			return out, Reject(ReasonInvalidRetryOn, path+".retryOn", "unknown retry condition %q; want one of %s (HTTP) or %s (gRPC)",
				t, strings.Join(RetryOnHTTP, ", "), strings.Join(RetryOnGRPC, ", "))
		}
		if !seen[t] {
			seen[t] = true
			out.RetryOn = append(out.RetryOn, t)
		}
	}
	if rp.NumRetries != nil {
		n := rp.GetNumRetries()
		if n < 0 {
			return out, Reject(ReasonInvalidValue, path+".numRetries", "%d is negative", n)
		}
		if n > math.MaxUint32 {
			return out, Reject(ReasonInvalidValue, path+".numRetries", "%d is over %d", n, uint32(math.MaxUint32))
		}
		v := uint32(n)
		out.NumRetries = &v
	}
	var rej *Rejection
	if out.PerTryTimeout, rej = duration(path+".perTryTimeout", rp.GetPerTryTimeout()); rej != nil {
		return out, rej
	}
	if out.BackoffBase, rej = duration(path+".retryBackoffBaseInterval", rp.GetRetryBackoffBaseInterval()); rej != nil {
		return out, rej
	}
	return out, nil
}

// duration parses a Kubernetes duration (Go's syntax, as metav1.Duration);
// empty is 0.
func duration(path, s string) (time.Duration, *Rejection) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, Reject(ReasonInvalidDuration, path, "%q is not a duration such as \"1s\" or \"250ms\"", s)
	}
	if d < 0 {
		return 0, Reject(ReasonInvalidDuration, path, "%q is negative", s)
	}
	return d, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// RetryPolicyEnabled reports whether the mesh applies Retry policies:
// MeshConfig's spec.featureFlags.enableRetryPolicy, true when unset (OSM's
// default is false; here Retry is a supported kind, and false turns every
// Retry off).
func RetryPolicyEnabled(mc *meshv1.MeshConfig) bool {
	if f := mc.GetFeatureFlags(); f != nil && f.EnableRetryPolicy != nil {
		return f.GetEnableRetryPolicy()
	}
	return true
}
