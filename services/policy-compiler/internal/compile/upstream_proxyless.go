package compile

import (
	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Reasons of an UpstreamTrafficSetting accepted with a warning because
// proxyless gRPC clients cannot apply all of its outlier detection.
const (
	// ReasonOutlierDetectionDoesNothingForProxylessGRPC: the setting's
	// outlierDetection has no failurePercentage, the one ejection gRPC-Go
	// applies, so its proxyless clients eject no endpoint.
	ReasonOutlierDetectionDoesNothingForProxylessGRPC = "OutlierDetectionDoesNothingForProxylessGRPC"
	// ReasonConsecutive5xxIgnoredByProxylessGRPC: consecutive5xxErrors is
	// written beside failurePercentage; proxyless clients apply only the
	// latter.
	ReasonConsecutive5xxIgnoredByProxylessGRPC = "Consecutive5xxIgnoredByProxylessGRPC"
)

// upstreamWarning judges an accepted UpstreamTrafficSetting for the gRPC
// flavour (Options.ProxylessGRPC): gRPC-Go's outlier detection (gRFC A50)
// has no consecutive 5xx ejection, so the gRPC cluster of the setting's
// Service gets only its failurePercentage (grpcOutlierDetection). The
// setting is still accepted, since the Envoy sidecars eject as written;
// the warning names the field proxyless clients leave out. Nil without
// the flavour, without outlierDetection, or when the Service has no http
// or grpc port (no gRPC cluster: no proxyless client).
//
// Like the Retry's (retryWarning), it is a fact about the object, its
// Service's ports and the compiler's flavour: whether proxyless clients
// exist does not change it. A Service change marks its settings dirty
// (upstreamServiceChanged), so the warning follows the ports.
func (e *Engine) upstreamWarning(up *Upstream) *Rejection {
	if !e.opts.ProxylessGRPC || up == nil || up.Outlier == nil {
		return nil
	}
	svc := e.m.Service(model.NN{Namespace: up.Service.Namespace, Name: up.Service.Name})
	grpc := false
	for _, p := range svc.GetPorts() {
		if (p.GetProtocol() == "" || p.GetProtocol() == "TCP") && ProtocolOf(p.GetAppProtocol(), p.GetName()).IsHTTP() {
			grpc = true
		}
	}
	if !grpc {
		return nil
	}
	return proxylessOutlierWarning(up.Service, up.Outlier)
}

// proxylessOutlierWarning is upstreamWarning's judgement of o, the
// outlier detection of svc's setting, flavour and ports aside.
func proxylessOutlierWarning(svc policy.ServiceRef, o *policy.Outlier) *Rejection {
	const path = "spec.outlierDetection"
	why := "gRPC-Go's outlier detection (gRFC A50) has no consecutive 5xx ejection"
	switch {
	case o.FailurePercentage == nil:
		field, envoy := path, "eject after 5 consecutive 5xx (the default)"
		if o.Consecutive5xx != nil {
			field, envoy = path+".consecutive5xxErrors", "eject as written"
		}
		return reject(ReasonOutlierDetectionDoesNothingForProxylessGRPC, field,
			"proxyless gRPC clients of Service %s eject no endpoint: %s; set %s.failurePercentage for them; its Envoy sidecars %s",
			svc, why, path, envoy)
	case o.Consecutive5xx != nil:
		return reject(ReasonConsecutive5xxIgnoredByProxylessGRPC, path+".consecutive5xxErrors",
			"dropped for proxyless gRPC clients of Service %s, which eject on %s.failurePercentage only: %s; its Envoy sidecars eject on both",
			svc, path, why)
	}
	return nil
}
