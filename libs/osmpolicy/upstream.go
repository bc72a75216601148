package osmpolicy

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// UpstreamTrafficSettingGVR is the resource of the UpstreamTrafficSetting
// CRD.
var UpstreamTrafficSettingGVR = GroupVersion.WithResource("upstreamtrafficsettings")

// UpstreamTrafficSetting is OSM's UpstreamTrafficSetting (OSM v1.2's JSON
// names), plus spec.outlierDetection (with its failurePercentage) and
// spec.httpRoutes[].timeout. Unlike
// the other kinds' readers it decodes through these Go types: the schema is
// deep, and a value of the wrong JSON type makes the whole spec unreadable
// (recorded in invalid_fields at "spec"), which the CRD's schema prevents.
type UpstreamTrafficSetting struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the setting.
	Spec UpstreamTrafficSettingSpec `json:"spec,omitempty"`
}

// UpstreamTrafficSettingSpec is the spec of an UpstreamTrafficSetting.
type UpstreamTrafficSettingSpec struct {
	// Host is the upstream Service: its name or its FQDN.
	Host string `json:"host"`
	// ConnectionSettings are the client proxies' connection limits.
	ConnectionSettings *ConnectionSettingsSpec `json:"connectionSettings,omitempty"`
	// OutlierDetection is the client proxies' ejection of failing
	// endpoints (not in OSM's schema).
	OutlierDetection *OutlierDetectionSpec `json:"outlierDetection,omitempty"`
	// RateLimit is enforced by the upstream's proxies.
	RateLimit *RateLimitSpec `json:"rateLimit,omitempty"`
	// HTTPRoutes are per-route settings.
	HTTPRoutes []HTTPRouteSpec `json:"httpRoutes,omitempty"`
}

// ConnectionSettingsSpec is spec.connectionSettings.
type ConnectionSettingsSpec struct {
	TCP  *TCPConnectionSettings  `json:"tcp,omitempty"`
	HTTP *HTTPConnectionSettings `json:"http,omitempty"`
}

// TCPConnectionSettings is spec.connectionSettings.tcp.
type TCPConnectionSettings struct {
	MaxConnections *int64 `json:"maxConnections,omitempty"`
	ConnectTimeout string `json:"connectTimeout,omitempty"`
}

// HTTPConnectionSettings is spec.connectionSettings.http.
type HTTPConnectionSettings struct {
	MaxRequests              *int64 `json:"maxRequests,omitempty"`
	MaxRequestsPerConnection *int64 `json:"maxRequestsPerConnection,omitempty"`
	MaxPendingRequests       *int64 `json:"maxPendingRequests,omitempty"`
	MaxRetries               *int64 `json:"maxRetries,omitempty"`
}

// OutlierDetectionSpec is spec.outlierDetection.
type OutlierDetectionSpec struct {
	Consecutive5xxErrors *int64 `json:"consecutive5xxErrors,omitempty"`
	Interval             string `json:"interval,omitempty"`
	BaseEjectionTime     string `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent   *int64 `json:"maxEjectionPercent,omitempty"`
	// FailurePercentage is not in OSM's schema.
	FailurePercentage *FailurePercentageSpec `json:"failurePercentage,omitempty"`
}

// FailurePercentageSpec is spec.outlierDetection.failurePercentage.
type FailurePercentageSpec struct {
	Threshold             *int64 `json:"threshold,omitempty"`
	MinimumHosts          *int64 `json:"minimumHosts,omitempty"`
	RequestVolume         *int64 `json:"requestVolume,omitempty"`
	EnforcementPercentage *int64 `json:"enforcementPercentage,omitempty"`
}

// RateLimitSpec is spec.rateLimit.
type RateLimitSpec struct {
	Local *LocalRateLimitSpec `json:"local,omitempty"`
}

// LocalRateLimitSpec is spec.rateLimit.local.
type LocalRateLimitSpec struct {
	TCP  *TCPLocalRateLimitSpec  `json:"tcp,omitempty"`
	HTTP *HTTPLocalRateLimitSpec `json:"http,omitempty"`
}

// TCPLocalRateLimitSpec is a token bucket of connections.
type TCPLocalRateLimitSpec struct {
	Connections int64  `json:"connections"`
	Unit        string `json:"unit"`
	Burst       int64  `json:"burst,omitempty"`
}

// HTTPLocalRateLimitSpec is a token bucket of requests.
type HTTPLocalRateLimitSpec struct {
	Requests             int64             `json:"requests"`
	Unit                 string            `json:"unit"`
	Burst                int64             `json:"burst,omitempty"`
	ResponseStatusCode   int64             `json:"responseStatusCode,omitempty"`
	ResponseHeadersToAdd []HTTPHeaderValue `json:"responseHeadersToAdd,omitempty"`
}

// HTTPHeaderValue is an HTTP header name and value.
type HTTPHeaderValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPRouteSpec is one entry of spec.httpRoutes.
type HTTPRouteSpec struct {
	Path      string                     `json:"path"`
	RateLimit *HTTPPerRouteRateLimitSpec `json:"rateLimit,omitempty"`
	// Timeout is not in OSM's schema.
	Timeout string `json:"timeout,omitempty"`
}

// HTTPPerRouteRateLimitSpec is spec.httpRoutes[].rateLimit.
type HTTPPerRouteRateLimitSpec struct {
	Local *HTTPLocalRateLimitSpec `json:"local,omitempty"`
}

// DecodeUpstreamTrafficSetting reads an UpstreamTrafficSetting's JSON (an
// AdmissionRequest's object).
func DecodeUpstreamTrafficSetting(raw []byte) (*meshv1.UpstreamTrafficSetting, error) {
	var u UpstreamTrafficSetting
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, err
	}
	return u.Contract(), nil
}

// ParseUpstreamTrafficSetting reads an UpstreamTrafficSetting given as
// unstructured (the watcher's dynamic informer). An object that does not
// decode keeps its metadata and has the error in invalid_fields.
func ParseUpstreamTrafficSetting(obj *unstructured.Unstructured) *meshv1.UpstreamTrafficSetting {
	raw, err := json.Marshal(obj.Object)
	if err == nil {
		var u UpstreamTrafficSetting
		if err = json.Unmarshal(raw, &u); err == nil {
			return u.Contract()
		}
	}
	out := &meshv1.UpstreamTrafficSetting{
		Meta:       &meshv1.ObjectMeta{Namespace: obj.GetNamespace(), Name: obj.GetName(), Uid: string(obj.GetUID()), Generation: obj.GetGeneration()},
		ApiVersion: apiVersion(obj.GetAPIVersion()),
	}
	out.InvalidFields = []*meshv1.InvalidField{{FieldPath: "spec", Message: fmt.Sprintf("cannot be read: %v", err)}}
	return out
}

func apiVersion(v string) string {
	if v == "" {
		return GroupVersion.String()
	}
	return v
}

// Contract is the object in the contract's form.
func (u *UpstreamTrafficSetting) Contract() *meshv1.UpstreamTrafficSetting {
	s := u.Spec
	out := &meshv1.UpstreamTrafficSetting{
		Meta:       metaOf(u.ObjectMeta),
		ApiVersion: apiVersion(u.APIVersion),
		Host:       s.Host,
	}
	if c := s.ConnectionSettings; c != nil {
		out.ConnectionSettings = &meshv1.UpstreamConnectionSettings{}
		if t := c.TCP; t != nil {
			out.ConnectionSettings.Tcp = &meshv1.UpstreamTCPConnectionSettings{MaxConnections: int64p(t.MaxConnections), ConnectTimeout: t.ConnectTimeout}
		}
		if h := c.HTTP; h != nil {
			out.ConnectionSettings.Http = &meshv1.UpstreamHTTPConnectionSettings{
				MaxRequests:              int64p(h.MaxRequests),
				MaxRequestsPerConnection: int64p(h.MaxRequestsPerConnection),
				MaxPendingRequests:       int64p(h.MaxPendingRequests),
				MaxRetries:               int64p(h.MaxRetries),
			}
		}
	}
	if o := s.OutlierDetection; o != nil {
		out.OutlierDetection = &meshv1.UpstreamOutlierDetection{
			Consecutive_5XxErrors: int64p(o.Consecutive5xxErrors),
			Interval:              o.Interval,
			BaseEjectionTime:      o.BaseEjectionTime,
			MaxEjectionPercent:    int64p(o.MaxEjectionPercent),
		}
		if f := o.FailurePercentage; f != nil {
			out.OutlierDetection.FailurePercentage = &meshv1.UpstreamFailurePercentageEjection{
				Threshold:             int64p(f.Threshold),
				MinimumHosts:          int64p(f.MinimumHosts),
				RequestVolume:         int64p(f.RequestVolume),
				EnforcementPercentage: int64p(f.EnforcementPercentage),
			}
		}
	}
	if r := s.RateLimit; r != nil {
		out.RateLimit = &meshv1.UpstreamRateLimit{}
		if l := r.Local; l != nil {
			out.RateLimit.Local = &meshv1.UpstreamLocalRateLimit{Http: httpLimit(l.HTTP)}
			if t := l.TCP; t != nil {
				out.RateLimit.Local.Tcp = &meshv1.TCPLocalRateLimit{Connections: t.Connections, Unit: t.Unit, Burst: t.Burst}
			}
		}
	}
	for _, r := range s.HTTPRoutes {
		hr := &meshv1.HTTPRouteSetting{Path: r.Path, Timeout: r.Timeout}
		if r.RateLimit != nil {
			hr.RateLimit = &meshv1.HTTPRouteRateLimit{Local: httpLimit(r.RateLimit.Local)}
		}
		out.HttpRoutes = append(out.HttpRoutes, hr)
	}
	return out
}

func httpLimit(h *HTTPLocalRateLimitSpec) *meshv1.HTTPLocalRateLimit {
	if h == nil {
		return nil
	}
	out := &meshv1.HTTPLocalRateLimit{Requests: h.Requests, Unit: h.Unit, Burst: h.Burst, ResponseStatusCode: h.ResponseStatusCode}
	for _, hv := range h.ResponseHeadersToAdd {
		out.ResponseHeadersToAdd = append(out.ResponseHeadersToAdd, &meshv1.HTTPHeaderValue{Name: hv.Name, Value: hv.Value})
	}
	return out
}

// metaOf is the subset of metadata the mesh keeps, from typed metadata.
func metaOf(m metav1.ObjectMeta) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{Namespace: m.Namespace, Name: m.Name, Uid: string(m.UID), Generation: m.Generation}
}

// int64p copies an optional integer.
func int64p(v *int64) *int64 {
	if v == nil {
		return nil
	}
	x := *v
	return &x
}
