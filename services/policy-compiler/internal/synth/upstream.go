package synth

import (
	"fmt"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func i64(v int64) *int64 { return &v }

// UpstreamTrafficSetting is an UpstreamTrafficSetting of ns for host with
// spec (its host is set from host; nil spec: connection limits and
// outlier detection only).
func UpstreamTrafficSetting(ns, name, host string, spec *meshv1.UpstreamTrafficSetting) Object {
	u := &meshv1.UpstreamTrafficSetting{}
	if spec != nil {
		u = spec
	} else {
		u.ConnectionSettings = &meshv1.UpstreamConnectionSettings{
			Tcp:  &meshv1.UpstreamTCPConnectionSettings{MaxConnections: i64(100), ConnectTimeout: "2s"},
			Http: &meshv1.UpstreamHTTPConnectionSettings{MaxRequests: i64(200), MaxPendingRequests: i64(50)},
		}
		u.OutlierDetection = &meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: i64(5), Interval: "10s", BaseEjectionTime: "30s", MaxEjectionPercent: i64(50)}
	}
	u.Meta = meta(ns, name)
	u.ApiVersion = "policy.openservicemesh.io/v1alpha1"
	u.Host = host
	return Object{layout.KindUpstreamTrafficSetting, ns, name, u}
}

// BookstoreUpstreams are UpstreamTrafficSettings for the Bookstore demo:
// every setting on bookstore-v1 (http: limits, outlier detection with
// consecutive 5xx and failure-percentage ejection, a rate limit for all
// requests and one for /books-bought with a timeout) and a connection
// rate limit on mysql (tcp).
func BookstoreUpstreams() []Object {
	return []Object{
		UpstreamTrafficSetting("bookstore", "bookstore-v1", "bookstore-v1.bookstore.svc.cluster.local", &meshv1.UpstreamTrafficSetting{
			ConnectionSettings: &meshv1.UpstreamConnectionSettings{
				Tcp: &meshv1.UpstreamTCPConnectionSettings{MaxConnections: i64(100), ConnectTimeout: "3s"},
				Http: &meshv1.UpstreamHTTPConnectionSettings{MaxRequests: i64(200), MaxRequestsPerConnection: i64(10),
					MaxPendingRequests: i64(50), MaxRetries: i64(3)},
			},
			OutlierDetection: &meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: i64(3), Interval: "5s", BaseEjectionTime: "30s", MaxEjectionPercent: i64(100),
				FailurePercentage: &meshv1.UpstreamFailurePercentageEjection{Threshold: i64(50), MinimumHosts: i64(2), RequestVolume: i64(20)}},
			RateLimit: &meshv1.UpstreamRateLimit{Local: &meshv1.UpstreamLocalRateLimit{Http: &meshv1.HTTPLocalRateLimit{
				Requests: 100, Unit: "minute", Burst: 10, ResponseStatusCode: 503,
				ResponseHeadersToAdd: []*meshv1.HTTPHeaderValue{{Name: "x-rate-limited", Value: "true"}},
			}}},
			HttpRoutes: []*meshv1.HTTPRouteSetting{{
				Path:      "/books-bought",
				RateLimit: &meshv1.HTTPRouteRateLimit{Local: &meshv1.HTTPLocalRateLimit{Requests: 10, Unit: "second"}},
				Timeout:   "2s",
			}},
		}),
		UpstreamTrafficSetting("bookwarehouse", "mysql", "mysql", &meshv1.UpstreamTrafficSetting{
			RateLimit: &meshv1.UpstreamRateLimit{Local: &meshv1.UpstreamLocalRateLimit{Tcp: &meshv1.TCPLocalRateLimit{Connections: 20, Unit: "second", Burst: 5}}},
		}),
	}
}

// upstreamSettings are c.UpstreamTrafficSettings settings on the first
// services, one each: connection limits and outlier detection, and on
// http services a rate limit.
func (c Config) upstreamSettings() []Object {
	var out []Object
	for i := 0; i < c.UpstreamTrafficSettings && i < c.Services; i++ {
		ns, name := c.SvcNamespace(i), SvcName(i)
		o := UpstreamTrafficSetting(ns, name+"-upstream", fmt.Sprintf("%s.%s.svc.cluster.local", name, ns), nil)
		if SyntheticPort(i).AppProtocol == "http" {
			o.Msg.(*meshv1.UpstreamTrafficSetting).RateLimit = &meshv1.UpstreamRateLimit{Local: &meshv1.UpstreamLocalRateLimit{
				Http: &meshv1.HTTPLocalRateLimit{Requests: 1000, Unit: "second", Burst: 100},
			}}
		}
		out = append(out, o)
	}
	return out
}
