package compile

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httplrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netlrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/policy"
)

// The Envoy mapping of an UpstreamTrafficSetting, after OSM's:
//   - on the upstream's cluster, which every client proxy shares:
//     connectTimeout, circuit breaker thresholds (maxConnections,
//     maxRequests, maxPendingRequests, maxRetries), maxRequestsPerConnection
//     (HTTP protocol options) and outlier detection;
//   - on the inbound listener of each identity serving the upstream, on
//     the chain of the upstream's target port: a network local rate limit
//     (rateLimit.local.tcp) before the RBAC filter, or, for http ports, the
//     HTTP local rate limit filter with the upstream's bucket on the
//     virtual host (rateLimit.local.http) and a route's own on each route
//     whose path regex is an httpRoutes[].path, which also sets that
//     route's timeout. In permissive mode, whose one route matches
//     everything, each httpRoutes[].path gets a route of its own.
//
// Each proxy has its own buckets: a limit applies per proxy, not per
// Service. A chain serves the target port of every Service its identity
// backs on that port (a split's apex and its backend): it takes the
// setting of the Service it forwards to, the backend's, not the apex's.

const (
	httpRateLimitFilterName = "envoy.filters.http.local_ratelimit"
	netRateLimitFilterName  = "envoy.filters.network.local_ratelimit"
	httpOptionsKey          = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

func u32(v *uint32) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(*v)
}

// applyUpstream sets the client side of up on the cluster c of a port of
// protocol p.
func applyUpstream(c *clusterv3.Cluster, p Protocol, up *Upstream) error {
	if up == nil {
		return nil
	}
	if up.ConnectTimeout > 0 {
		c.ConnectTimeout = durationpb.New(up.ConnectTimeout)
	}
	if up.MaxConnections != nil || up.MaxRequests != nil || up.MaxPendingRequests != nil || up.MaxRetries != nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     u32(up.MaxConnections),
			MaxRequests:        u32(up.MaxRequests),
			MaxPendingRequests: u32(up.MaxPendingRequests),
			MaxRetries:         u32(up.MaxRetries),
		}}}
	}
	if up.MaxRequestsPerConnection != nil && p.IsHTTP() {
		opts := &httpoptsv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			}},
		}
		if p == ProtocolGRPC {
			opts.UpstreamProtocolOptions = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}}
		}
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: u32(up.MaxRequestsPerConnection)}
		a, err := typed(opts)
		if err != nil {
			return fmt.Errorf("protocol options: %w", err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsKey: a}
	}
	if o := up.Outlier; o != nil {
		c.OutlierDetection = outlierDetection(o)
	}
	return nil
}

// outlierDetection is an Envoy cluster's outlier detection of o:
// consecutive 5xx (Envoy's default 5 when not written) and, when o has
// it, failure-percentage ejection.
func outlierDetection(o *policy.Outlier) *clusterv3.OutlierDetection {
	od := &clusterv3.OutlierDetection{Consecutive_5Xx: u32(o.Consecutive5xx)}
	outlierCommon(od, o)
	return od
}

// outlierCommon sets on od the sweep, ejection time and limit of o and its
// failure-percentage ejection, which both flavours read alike.
func outlierCommon(od *clusterv3.OutlierDetection, o *policy.Outlier) {
	od.MaxEjectionPercent = u32(o.MaxEjectionPercent)
	if o.Interval > 0 {
		od.Interval = durationpb.New(o.Interval)
	}
	if o.BaseEjectionTime > 0 {
		od.BaseEjectionTime = durationpb.New(o.BaseEjectionTime)
	}
	if f := o.FailurePercentage; f != nil {
		od.FailurePercentageThreshold = u32(f.Threshold)
		od.FailurePercentageMinimumHosts = u32(f.MinimumHosts)
		od.FailurePercentageRequestVolume = u32(f.RequestVolume)
		// Written even when 100: Envoy and gRPC default it to 0, off.
		od.EnforcingFailurePercentage = wrapperspb.UInt32(f.EnforcementPercentage)
	}
}

// grpcOutlierDetection is a gRPC flavour cluster's outlier detection of
// o: gRPC-Go's (gRFC A50) knows success-rate and failure-percentage
// ejection only, not consecutive 5xx, so only an o with failurePercentage
// gets one, with the interval, base ejection time and max ejection percent.
// Success-rate ejection, which gRPC turns on unless enforcing_success_rate
// is 0, is turned off: the user did not write it. Nil otherwise; such a
// setting is accepted with a warning (outlierWarning).
func grpcOutlierDetection(o *policy.Outlier) *clusterv3.OutlierDetection {
	if o == nil || o.FailurePercentage == nil {
		return nil
	}
	od := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	outlierCommon(od, o)
	return od
}

// applyGRPCUpstream sets on a gRPC flavour cluster what gRPC's xDS client
// applies of up: the max_requests circuit breaker (gRFC A32) and
// failure-percentage outlier detection (grpcOutlierDetection). gRPC
// ignores the other thresholds and the connect timeout.
func applyGRPCUpstream(c *clusterv3.Cluster, up *Upstream) {
	if up == nil {
		return
	}
	if up.MaxRequests != nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority: corev3.RoutingPriority_DEFAULT, MaxRequests: u32(up.MaxRequests),
		}}}
	}
	c.OutlierDetection = grpcOutlierDetection(up.Outlier)
}

func tokenBucket(b policy.TokenBucket) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: b.Tokens + b.Burst, TokensPerFill: wrapperspb.UInt32(b.Tokens), FillInterval: durationpb.New(b.Fill)}
}

// tcpRateLimit is the network local rate limit filter of a chain whose
// upstream setting up limits connections; none otherwise.
func tcpRateLimit(stat string, up *Upstream) ([]*listenerv3.Filter, error) {
	if up == nil || up.TCPLimit == nil {
		return nil, nil
	}
	a, err := typed(&netlrlv3.LocalRateLimit{StatPrefix: stat, TokenBucket: tokenBucket(*up.TCPLimit)})
	if err != nil {
		return nil, fmt.Errorf("network local rate limit: %w", err)
	}
	return []*listenerv3.Filter{{Name: netRateLimitFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}, nil
}

// limitsHTTP reports whether up limits any request rate.
func limitsHTTP(up *Upstream) bool {
	if up == nil {
		return false
	}
	if up.HTTPLimit != nil {
		return true
	}
	for _, r := range up.Routes {
		if r.Limit != nil {
			return true
		}
	}
	return false
}

// httpRateLimitFilter is the HTTP local rate limit filter of a connection
// manager: without a bucket of its own it limits only where a virtual
// host or route configures one.
func httpRateLimitFilter(stat string) (*hcmv3.HttpFilter, error) {
	a, err := typed(&httplrlv3.LocalRateLimit{StatPrefix: stat})
	if err != nil {
		return nil, fmt.Errorf("http local rate limit: %w", err)
	}
	return &hcmv3.HttpFilter{Name: httpRateLimitFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// httpLimit is the per-virtual-host or per-route config of l.
func httpLimit(stat string, l *policy.HTTPLimit) (*anypb.Any, error) {
	all := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	cfg := &httplrlv3.LocalRateLimit{
		StatPrefix:     stat,
		TokenBucket:    tokenBucket(l.TokenBucket),
		FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: all.DefaultValue, RuntimeKey: "local_rate_limit_enabled"},
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: all.DefaultValue, RuntimeKey: "local_rate_limit_enforced"},
	}
	if l.StatusCode != 0 {
		cfg.Status = &typev3.HttpStatus{Code: typev3.StatusCode(l.StatusCode)}
	}
	for _, h := range l.Headers {
		cfg.ResponseHeadersToAdd = append(cfg.ResponseHeadersToAdd, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	a, err := typed(cfg)
	if err != nil {
		return nil, fmt.Errorf("http local rate limit: %w", err)
	}
	return a, nil
}

// applyVirtualHostLimit sets up's limit of every request on vh.
func applyVirtualHostLimit(vh *routev3.VirtualHost, stat string, up *Upstream) error {
	if up == nil || up.HTTPLimit == nil {
		return nil
	}
	a, err := httpLimit(stat, up.HTTPLimit)
	if err != nil {
		return fmt.Errorf("virtual host %s: %w", vh.Name, err)
	}
	vh.TypedPerFilterConfig = map[string]*anypb.Any{httpRateLimitFilterName: a}
	return nil
}

// routeRegex is a path regex as HTTPMatch keeps it: "" for one that
// matches every path.
func routeRegex(path string) string {
	if path == ".*" || path == "/*" {
		return ""
	}
	return path
}

// applyRouteSetting applies to rt the httpRoutes entry of up whose path is
// the route's path regex, if any: its rate limit and its timeout.
func applyRouteSetting(rt *routev3.Route, stat string, m HTTPMatch, up *Upstream) error {
	if up == nil {
		return nil
	}
	for _, r := range up.Routes {
		if routeRegex(r.PathRegex) != m.PathRegex {
			continue
		}
		if r.Timeout > 0 {
			rt.GetRoute().Timeout = durationpb.New(r.Timeout)
		}
		if r.Limit != nil {
			a, err := httpLimit(stat+"|"+rt.Name, r.Limit)
			if err != nil {
				return fmt.Errorf("route %s: %w", rt.Name, err)
			}
			if rt.TypedPerFilterConfig == nil {
				rt.TypedPerFilterConfig = map[string]*anypb.Any{}
			}
			rt.TypedPerFilterConfig[httpRateLimitFilterName] = a
		}
		return nil
	}
	return nil
}

// upstreamRoutes are, in permissive mode, a route per httpRoutes entry of
// up (the wildcard route matches everything else), in the order written.
func upstreamRoutes(up *Upstream) []*inboundRoute {
	if up == nil {
		return nil
	}
	var out []*inboundRoute
	for _, r := range up.Routes {
		if re := routeRegex(r.PathRegex); re != "" {
			out = append(out, &inboundRoute{match: HTTPMatch{Key: "upstream:" + r.PathRegex, PathRegex: re}})
		}
	}
	return out
}
