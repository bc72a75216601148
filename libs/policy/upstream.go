package policy

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Reasons of rejected UpstreamTrafficSettings.
const (
	// ReasonServiceNotFound: spec.host names no Service.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonHostConflict: another UpstreamTrafficSetting has the same host.
	ReasonHostConflict = "HostConflict"
)

// ServiceRef names a Service.
type ServiceRef struct {
	// Namespace and Name of the Service.
	Namespace, Name string
}

// String is "namespace/name".
func (s ServiceRef) String() string { return s.Namespace + "/" + s.Name }

// Upstream is a validated UpstreamTrafficSetting: what its proxies apply.
// Unset pointers and zero durations keep the mesh's defaults.
type Upstream struct {
	// Service is the upstream Service spec.host names.
	Service ServiceRef
	// ConnectTimeout of the clients' connections; 0: the default.
	ConnectTimeout time.Duration
	// Circuit breaker thresholds of the clients' clusters.
	MaxConnections, MaxRequests, MaxPendingRequests, MaxRetries *uint32
	// MaxRequestsPerConnection of the clients' connections.
	MaxRequestsPerConnection *uint32
	// Outlier is the clients' outlier detection; nil: none.
	Outlier *Outlier
	// TCPLimit is the local rate limit of connections at the upstream's
	// inbound; nil: none.
	TCPLimit *TokenBucket
	// HTTPLimit is the local rate limit of every request at the upstream's
	// inbound; nil: none.
	HTTPLimit *HTTPLimit
	// Routes are the per-route settings, in the order written.
	Routes []RouteSetting
}

// Outlier is a validated spec.outlierDetection; unset fields keep
// Envoy's defaults.
type Outlier struct {
	// Consecutive5xx errors before an ejection.
	Consecutive5xx *uint32
	// Interval between sweeps and BaseEjectionTime; 0: the default.
	Interval, BaseEjectionTime time.Duration
	// MaxEjectionPercent of the endpoints ejected at once.
	MaxEjectionPercent *uint32
	// FailurePercentage ejection; nil: none.
	FailurePercentage *FailurePercentage
}

// FailurePercentage is a validated spec.outlierDetection.failurePercentage:
// an endpoint whose calls in an interval failed at Threshold percent or
// more is ejected. Unset fields keep Envoy's and gRPC's defaults (85, 5,
// 50), but for EnforcementPercentage, which is always set (100 when not
// written): both default it to 0, which turns the ejection off.
type FailurePercentage struct {
	// Threshold percentage of failed calls, 0 to 100.
	Threshold *uint32
	// MinimumHosts with RequestVolume calls for any ejection.
	MinimumHosts *uint32
	// RequestVolume of an endpoint's calls for it to be judged.
	RequestVolume *uint32
	// EnforcementPercentage: the chance of ejecting a failing endpoint.
	EnforcementPercentage uint32
}

// TokenBucket is a local rate limit: Tokens per Fill, up to Tokens+Burst
// at once.
type TokenBucket struct {
	// Tokens added every Fill.
	Tokens uint32
	// Burst tokens above Tokens the bucket holds.
	Burst uint32
	// Fill is the unit: a second, a minute or an hour.
	Fill time.Duration
}

// HTTPLimit is a local rate limit of requests.
type HTTPLimit struct {
	TokenBucket
	// StatusCode of a limited request (429 when not written).
	StatusCode uint32
	// Headers added to a limited request's response.
	Headers []HeaderValue
}

// HeaderValue is an HTTP header name and value.
type HeaderValue struct {
	// Name and Value of the header.
	Name, Value string
}

// RouteSetting is one validated entry of spec.httpRoutes.
type RouteSetting struct {
	// PathRegex is the route's RE2 path regex as written.
	PathRegex string
	// Limit of the route's requests; nil: none.
	Limit *HTTPLimit
	// Timeout of the route's requests; 0: none.
	Timeout time.Duration
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	headerName = regexp.MustCompile("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")
)

var units = map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour}

// UpstreamHost resolves spec.host of an UpstreamTrafficSetting in
// namespace: a Service name ("bookstore", in namespace) or its DNS name
// ("bookstore.bookstore", "bookstore.bookstore.svc",
// "bookstore.bookstore.svc.cluster.local").
func UpstreamHost(namespace, host string) (ServiceRef, *Rejection) {
	const path = "spec.host"
	if host == "" {
		return ServiceRef{}, Reject(ReasonMissingField, path, "the upstream Service is required, as its name or FQDN (e.g. bookstore.bookstore.svc.cluster.local)")
	}
	labels := strings.Split(strings.ToLower(host), ".")
	if len(labels) > 2 && labels[2] != "svc" {
		return ServiceRef{}, Reject(ReasonInvalidValue, path, "%q is not a Service name or FQDN: want <service>, <service>.<namespace> or <service>.<namespace>.svc[.<cluster domain>]", host)
	}
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return ServiceRef{}, Reject(ReasonInvalidValue, path, "%q is not a Service name or FQDN: %q is not a DNS label (lower-case letters, digits and '-', at most 63)", host, l)
		}
	}
	ref := ServiceRef{Namespace: namespace, Name: labels[0]}
	if len(labels) > 1 {
		ref.Namespace = labels[1]
	}
	if ref.Namespace != namespace {
		return ServiceRef{}, Reject(ReasonCrossNamespace, path, "%q names Service %s, outside the UpstreamTrafficSetting's namespace %s: an UpstreamTrafficSetting lives in its upstream's namespace", host, ref, namespace)
	}
	return ref, nil
}

// UpstreamTrafficSetting checks an UpstreamTrafficSetting of namespace on
// its own (its host's form and namespace, its numbers, durations, units
// and regexes) and returns what it applies. Whether its Service exists
// and whether another setting has its host are the compiler's
// (UpstreamServiceNotFound, UpstreamHostConflict).
func UpstreamTrafficSetting(namespace string, u *meshv1.UpstreamTrafficSetting) (*Upstream, *Rejection) {
	if bad := u.GetInvalidFields(); len(bad) > 0 {
		return nil, Reject(ReasonInvalidValue, bad[0].GetFieldPath(), "%s", bad[0].GetMessage())
	}
	svc, rej := UpstreamHost(namespace, u.GetHost())
	if rej != nil {
		return nil, rej
	}
	out := &Upstream{Service: svc}
	var v checker
	if t := u.GetConnectionSettings().GetTcp(); t != nil {
		p := "spec.connectionSettings.tcp"
		out.MaxConnections = v.uint32(p+".maxConnections", t.MaxConnections)
		out.ConnectTimeout = v.duration(p+".connectTimeout", t.GetConnectTimeout())
	}
	if h := u.GetConnectionSettings().GetHttp(); h != nil {
		p := "spec.connectionSettings.http"
		out.MaxRequests = v.uint32(p+".maxRequests", h.MaxRequests)
		out.MaxRequestsPerConnection = v.uint32(p+".maxRequestsPerConnection", h.MaxRequestsPerConnection)
		out.MaxPendingRequests = v.uint32(p+".maxPendingRequests", h.MaxPendingRequests)
		out.MaxRetries = v.uint32(p+".maxRetries", h.MaxRetries)
	}
	if o := u.GetOutlierDetection(); o != nil {
		p := "spec.outlierDetection"
		out.Outlier = &Outlier{
			Consecutive5xx:     v.uint32(p+".consecutive5xxErrors", o.Consecutive_5XxErrors),
			Interval:           v.duration(p+".interval", o.GetInterval()),
			BaseEjectionTime:   v.duration(p+".baseEjectionTime", o.GetBaseEjectionTime()),
			MaxEjectionPercent: v.percent(p+".maxEjectionPercent", o.MaxEjectionPercent),
		}
		if f := o.GetFailurePercentage(); f != nil {
			fp := p + ".failurePercentage"
			out.Outlier.FailurePercentage = &FailurePercentage{
				Threshold:             v.percent(fp+".threshold", f.Threshold),
				MinimumHosts:          v.uint32(fp+".minimumHosts", f.MinimumHosts),
				RequestVolume:         v.uint32(fp+".requestVolume", f.RequestVolume),
				EnforcementPercentage: 100,
			}
			if e := v.percent(fp+".enforcementPercentage", f.EnforcementPercentage); e != nil {
				out.Outlier.FailurePercentage.EnforcementPercentage = *e
			}
		}
	}
	if t := u.GetRateLimit().GetLocal().GetTcp(); t != nil {
		p := "spec.rateLimit.local.tcp"
		out.TCPLimit = v.bucket(p, "connections", t.GetConnections(), t.GetUnit(), t.GetBurst())
	}
	out.HTTPLimit = v.httpLimit("spec.rateLimit.local.http", u.GetRateLimit().GetLocal().GetHttp())
	seen := map[string]int{}
	for i, r := range u.GetHttpRoutes() {
		p := fmt.Sprintf("spec.httpRoutes[%d]", i)
		rs := RouteSetting{PathRegex: r.GetPath()}
		switch _, err := regexp.Compile(r.GetPath()); {
		case r.GetPath() == "":
			v.fail(Reject(ReasonMissingField, p+".path", "a route needs the path regex of the inbound routes it applies to"))
		case err != nil:
			v.fail(Reject(ReasonInvalidRegex, p+".path", "invalid RE2 regular expression %q: %v", r.GetPath(), err))
		}
		if j, dup := seen[r.GetPath()]; dup {
			v.fail(Reject(ReasonInvalidValue, p+".path", "%q is already configured by spec.httpRoutes[%d]", r.GetPath(), j))
		}
		seen[r.GetPath()] = i
		rs.Limit = v.httpLimit(p+".rateLimit.local", r.GetRateLimit().GetLocal())
		rs.Timeout = v.duration(p+".timeout", r.GetTimeout())
		out.Routes = append(out.Routes, rs)
	}
	if v.rej != nil {
		return nil, v.rej
	}
	return out, nil
}

// UpstreamServiceNotFound is the rejection of a setting whose host names
// a Service that does not exist.
func UpstreamServiceNotFound(host string, svc ServiceRef) *Rejection {
	return Reject(ReasonServiceNotFound, "spec.host", "%q names Service %s, which does not exist", host, svc)
}

// UpstreamHostConflict is the rejection of a setting whose Service
// another setting, first in name order, already configures.
func UpstreamHostConflict(host string, svc ServiceRef, other string) *Rejection {
	return Reject(ReasonHostConflict, "spec.host", "%q names Service %s, which UpstreamTrafficSetting %s already configures: one UpstreamTrafficSetting per upstream", host, svc, other)
}

// checker keeps the first rejection of a series of checks.
type checker struct{ rej *Rejection }

func (c *checker) fail(r *Rejection) {
	if c.rej == nil {
		c.rej = r
	}
}

func (c *checker) uint32(path string, v *int64) *uint32 {
	if v == nil {
		return nil
	}
	if *v < 0 || *v > math.MaxUint32 {
		c.fail(Reject(ReasonInvalidValue, path, "%d is out of range (0 to %d)", *v, uint32(math.MaxUint32)))
		return nil
	}
	x := uint32(*v)
	return &x
}

// percent reads an optional percentage, 0 to 100.
func (c *checker) percent(path string, v *int64) *uint32 {
	if v == nil {
		return nil
	}
	if *v < 0 || *v > 100 {
		c.fail(Reject(ReasonInvalidValue, path, "%d is not a percentage (0 to 100)", *v))
		return nil
	}
	x := uint32(*v)
	return &x
}

// duration parses a positive duration; "" is 0 (the default).
func (c *checker) duration(path, s string) time.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.fail(Reject(ReasonInvalidValue, path, "%q is not a duration (e.g. \"500ms\", \"5s\"): %v", s, err))
		return 0
	}
	if d <= 0 {
		c.fail(Reject(ReasonInvalidValue, path, "%q must be longer than 0", s))
		return 0
	}
	return d
}

func (c *checker) bucket(path, field string, n int64, unit string, burst int64) *TokenBucket {
	fill, ok := units[unit]
	if !ok {
		c.fail(Reject(ReasonInvalidValue, path+".unit", "%q is not a unit: want \"second\", \"minute\" or \"hour\"", unit))
	}
	if n < 1 || n > math.MaxUint32 {
		c.fail(Reject(ReasonInvalidValue, path+"."+field, "%d is out of range (1 to %d)", n, uint32(math.MaxUint32)))
	}
	if burst < 0 || n+burst > math.MaxUint32 {
		c.fail(Reject(ReasonInvalidValue, path+".burst", "%d is out of range (0 to %d with %s)", burst, uint32(math.MaxUint32)-uint32(min(max(n, 0), math.MaxUint32)), field))
	}
	if c.rej != nil {
		return nil
	}
	return &TokenBucket{Tokens: uint32(n), Burst: uint32(burst), Fill: fill}
}

func (c *checker) httpLimit(path string, h *meshv1.HTTPLocalRateLimit) *HTTPLimit {
	if h == nil {
		return nil
	}
	b := c.bucket(path, "requests", h.GetRequests(), h.GetUnit(), h.GetBurst())
	if code := h.GetResponseStatusCode(); code != 0 && !errorStatus(code) {
		c.fail(Reject(ReasonInvalidValue, path+".responseStatusCode", "%d is not an HTTP error status the proxies send (400-417, 421-424, 426, 428, 429, 431, 500-508, 510, 511)", code))
	}
	out := &HTTPLimit{StatusCode: uint32(max(h.GetResponseStatusCode(), 0))}
	for i, hv := range h.GetResponseHeadersToAdd() {
		hp := fmt.Sprintf("%s.responseHeadersToAdd[%d]", path, i)
		if !headerName.MatchString(hv.GetName()) {
			c.fail(Reject(ReasonInvalidValue, hp+".name", "%q is not an HTTP header name (RFC 7230 token characters)", hv.GetName()))
		}
		if hv.GetValue() == "" {
			c.fail(Reject(ReasonMissingField, hp+".value", "header %q needs a value", hv.GetName()))
		}
		out.Headers = append(out.Headers, HeaderValue{Name: hv.GetName(), Value: hv.GetValue()})
	}
	if b == nil || c.rej != nil {
		return nil
	}
	out.TokenBucket = *b
	return out
}

// errorStatus reports whether code is a 4xx or 5xx status Envoy's local
// rate limit can answer with (its StatusCode enum).
func errorStatus(code int64) bool {
	switch {
	case code >= 400 && code <= 417, code >= 421 && code <= 424, code >= 500 && code <= 508:
		return true
	}
	switch code {
	case 426, 428, 429, 431, 510, 511:
		return true
	}
	return false
}
