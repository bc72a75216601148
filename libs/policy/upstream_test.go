package policy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestUpstreamHost(t *testing.T) {
	for _, c := range []struct {
		host, want, reason string
	}{
		{host: "bookstore", want: "bookstore/bookstore"},
		{host: "bookstore.bookstore", want: "bookstore/bookstore"},
		{host: "bookstore.bookstore.svc", want: "bookstore/bookstore"},
		{host: "bookstore.bookstore.svc.cluster.local", want: "bookstore/bookstore"},
		{host: "Bookstore.Bookstore.svc.cluster.local", want: "bookstore/bookstore"},
		{host: "", reason: ReasonMissingField},
		{host: "bookstore.other.svc.cluster.local", reason: ReasonCrossNamespace},
		{host: "bookstore.bookstore.example.com", reason: ReasonInvalidValue},
		{host: "book_store", reason: ReasonInvalidValue},
	} {
		got, rej := UpstreamHost("bookstore", c.host)
		switch {
		case c.reason == "" && (rej != nil || got.String() != c.want):
			t.Errorf("%q: %v %v, want %s", c.host, got, rej, c.want)
		case c.reason != "" && (rej == nil || rej.Reason != c.reason || rej.FieldPath != "spec.host"):
			t.Errorf("%q: %v, want a %s rejection of spec.host", c.host, rej, c.reason)
		}
	}
}

func valid() *meshv1.UpstreamTrafficSetting {
	return &meshv1.UpstreamTrafficSetting{
		Host: "bookstore.bookstore.svc.cluster.local",
		ConnectionSettings: &meshv1.UpstreamConnectionSettings{
			Tcp:  &meshv1.UpstreamTCPConnectionSettings{MaxConnections: proto.Int64(0), ConnectTimeout: "250ms"},
			Http: &meshv1.UpstreamHTTPConnectionSettings{MaxRequests: proto.Int64(4294967295), MaxRetries: proto.Int64(2)},
		},
		OutlierDetection: &meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3), Interval: "1s", MaxEjectionPercent: proto.Int64(100),
			FailurePercentage: &meshv1.UpstreamFailurePercentageEjection{Threshold: proto.Int64(50), MinimumHosts: proto.Int64(2), RequestVolume: proto.Int64(0)}},
		RateLimit: &meshv1.UpstreamRateLimit{Local: &meshv1.UpstreamLocalRateLimit{
			Tcp:  &meshv1.TCPLocalRateLimit{Connections: 5, Unit: "minute", Burst: 1},
			Http: &meshv1.HTTPLocalRateLimit{Requests: 10, Unit: "hour", ResponseStatusCode: 429, ResponseHeadersToAdd: []*meshv1.HTTPHeaderValue{{Name: "x-limited", Value: "1"}}},
		}},
		HttpRoutes: []*meshv1.HTTPRouteSetting{{Path: "/books.*", Timeout: "3s", RateLimit: &meshv1.HTTPRouteRateLimit{Local: &meshv1.HTTPLocalRateLimit{Requests: 1, Unit: "second"}}}},
	}
}

func TestUpstreamTrafficSettingValid(t *testing.T) {
	up, rej := UpstreamTrafficSetting("bookstore", valid())
	if rej != nil {
		t.Fatal(rej)
	}
	if up.Service != (ServiceRef{"bookstore", "bookstore"}) || up.ConnectTimeout != 250*time.Millisecond || *up.MaxConnections != 0 ||
		*up.MaxRequests != 4294967295 || up.MaxPendingRequests != nil || *up.Outlier.Consecutive5xx != 3 || up.Outlier.BaseEjectionTime != 0 ||
		*up.TCPLimit != (TokenBucket{Tokens: 5, Burst: 1, Fill: time.Minute}) || up.HTTPLimit.Fill != time.Hour || up.HTTPLimit.StatusCode != 429 ||
		len(up.Routes) != 1 || up.Routes[0].Timeout != 3*time.Second || up.Routes[0].Limit.Tokens != 1 {
		t.Errorf("upstream = %+v", up)
	}
	if fp := up.Outlier.FailurePercentage; fp == nil || *fp.Threshold != 50 || *fp.MinimumHosts != 2 || *fp.RequestVolume != 0 || fp.EnforcementPercentage != 100 {
		t.Errorf("failure percentage = %+v, want threshold 50, minimum hosts 2, request volume 0 and enforcement 100 (not written)", fp)
	}
	u := valid()
	u.OutlierDetection.FailurePercentage.EnforcementPercentage = proto.Int64(0)
	if up, rej := UpstreamTrafficSetting("bookstore", u); rej != nil || up.Outlier.FailurePercentage.EnforcementPercentage != 0 {
		t.Errorf("enforcementPercentage 0: %+v %v, want 0 kept", up, rej)
	}
}

// TestUpstreamTrafficSettingRejections: each rule names its field.
func TestUpstreamTrafficSettingRejections(t *testing.T) {
	for _, c := range []struct {
		name        string
		mut         func(u *meshv1.UpstreamTrafficSetting)
		reason, msg string
	}{
		{"unreadable", func(u *meshv1.UpstreamTrafficSetting) {
			u.InvalidFields = []*meshv1.InvalidField{{FieldPath: "spec", Message: "cannot be read: json: cannot unmarshal string"}}
		}, ReasonInvalidValue, "spec: cannot be read: json: cannot unmarshal string"},
		{"negative", func(u *meshv1.UpstreamTrafficSetting) { u.ConnectionSettings.Tcp.MaxConnections = proto.Int64(-1) },
			ReasonInvalidValue, "spec.connectionSettings.tcp.maxConnections: -1 is out of range (0 to 4294967295)"},
		{"too large", func(u *meshv1.UpstreamTrafficSetting) { u.ConnectionSettings.Http.MaxRetries = proto.Int64(1 << 32) },
			ReasonInvalidValue, "spec.connectionSettings.http.maxRetries: 4294967296 is out of range (0 to 4294967295)"},
		{"zero duration", func(u *meshv1.UpstreamTrafficSetting) { u.OutlierDetection.Interval = "0s" },
			ReasonInvalidValue, `spec.outlierDetection.interval: "0s" must be longer than 0`},
		{"percent", func(u *meshv1.UpstreamTrafficSetting) { u.OutlierDetection.MaxEjectionPercent = proto.Int64(101) },
			ReasonInvalidValue, "spec.outlierDetection.maxEjectionPercent: 101 is not a percentage (0 to 100)"},
		{"negative percent", func(u *meshv1.UpstreamTrafficSetting) { u.OutlierDetection.MaxEjectionPercent = proto.Int64(-1) },
			ReasonInvalidValue, "spec.outlierDetection.maxEjectionPercent: -1 is not a percentage (0 to 100)"},
		{"failure threshold", func(u *meshv1.UpstreamTrafficSetting) {
			u.OutlierDetection.FailurePercentage.Threshold = proto.Int64(101)
		},
			ReasonInvalidValue, "spec.outlierDetection.failurePercentage.threshold: 101 is not a percentage (0 to 100)"},
		{"negative failure threshold", func(u *meshv1.UpstreamTrafficSetting) {
			u.OutlierDetection.FailurePercentage.Threshold = proto.Int64(-5)
		},
			ReasonInvalidValue, "spec.outlierDetection.failurePercentage.threshold: -5 is not a percentage (0 to 100)"},
		{"failure enforcement", func(u *meshv1.UpstreamTrafficSetting) {
			u.OutlierDetection.FailurePercentage.EnforcementPercentage = proto.Int64(150)
		},
			ReasonInvalidValue, "spec.outlierDetection.failurePercentage.enforcementPercentage: 150 is not a percentage (0 to 100)"},
		{"failure minimum hosts", func(u *meshv1.UpstreamTrafficSetting) {
			u.OutlierDetection.FailurePercentage.MinimumHosts = proto.Int64(-1)
		},
			ReasonInvalidValue, "spec.outlierDetection.failurePercentage.minimumHosts: -1 is out of range (0 to 4294967295)"},
		{"failure request volume", func(u *meshv1.UpstreamTrafficSetting) {
			u.OutlierDetection.FailurePercentage.RequestVolume = proto.Int64(1 << 32)
		},
			ReasonInvalidValue, "spec.outlierDetection.failurePercentage.requestVolume: 4294967296 is out of range (0 to 4294967295)"},
		{"unit", func(u *meshv1.UpstreamTrafficSetting) { u.RateLimit.Local.Tcp.Unit = "day" },
			ReasonInvalidValue, `spec.rateLimit.local.tcp.unit: "day" is not a unit: want "second", "minute" or "hour"`},
		{"no requests", func(u *meshv1.UpstreamTrafficSetting) { u.RateLimit.Local.Http.Requests = 0 },
			ReasonInvalidValue, "spec.rateLimit.local.http.requests: 0 is out of range (1 to 4294967295)"},
		{"status", func(u *meshv1.UpstreamTrafficSetting) { u.RateLimit.Local.Http.ResponseStatusCode = 420 },
			ReasonInvalidValue, "spec.rateLimit.local.http.responseStatusCode: 420 is not an HTTP error status the proxies send (400-417, 421-424, 426, 428, 429, 431, 500-508, 510, 511)"},
		{"header", func(u *meshv1.UpstreamTrafficSetting) {
			u.RateLimit.Local.Http.ResponseHeadersToAdd[0].Name = "x limited"
		},
			ReasonInvalidValue, `spec.rateLimit.local.http.responseHeadersToAdd[0].name: "x limited" is not an HTTP header name (RFC 7230 token characters)`},
		{"route path", func(u *meshv1.UpstreamTrafficSetting) { u.HttpRoutes[0].Path = "" },
			ReasonMissingField, "spec.httpRoutes[0].path: a route needs the path regex of the inbound routes it applies to"},
		{"duplicate path", func(u *meshv1.UpstreamTrafficSetting) {
			u.HttpRoutes = append(u.HttpRoutes, &meshv1.HTTPRouteSetting{Path: "/books.*"})
		},
			ReasonInvalidValue, `spec.httpRoutes[1].path: "/books.*" is already configured by spec.httpRoutes[0]`},
		{"route limit", func(u *meshv1.UpstreamTrafficSetting) { u.HttpRoutes[0].RateLimit.Local.Burst = -2 },
			ReasonInvalidValue, "spec.httpRoutes[0].rateLimit.local.burst: -2 is out of range (0 to 4294967294 with requests)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := valid()
			c.mut(u)
			up, rej := UpstreamTrafficSetting("bookstore", u)
			if rej == nil || up != nil || rej.Reason != c.reason || rej.Message != c.msg {
				t.Errorf("got %v %+v, want %s %q", up, rej, c.reason, c.msg)
			}
		})
	}
}
