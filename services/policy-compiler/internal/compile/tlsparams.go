package compile

import (
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/openservicemesh/osm/libs/meshconfig/tlsparams"
)

// tlsParams are the tls_params of every Envoy Upstream and Downstream
// TlsContext of the mesh's mTLS, from the MeshConfig's
// spec.sidecar.tlsMinProtocolVersion, tlsMaxProtocolVersion, cipherSuites
// and ecdhCurves (values libs/meshconfig/tlsparams refuses are left out, so Envoy
// never NACKs them); nil when the MeshConfig sets none, which leaves
// Envoy's defaults. The gRPC flavour has no tls_params: proxyless gRPC
// uses Go's TLS settings.
//
// A MeshConfig change recompiles everything (dirty.everything), so the
// clusters and inbound listeners that carry these are rebuilt with it.
func (e *Engine) tlsParams() *tlsv3.TlsParameters {
	p := tlsparams.Effective(e.m.MeshConfig())
	if p.MinVersion == "" && p.MaxVersion == "" && len(p.CipherSuites) == 0 && len(p.ECDHCurves) == 0 {
		return nil
	}
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsProtocol(p.MinVersion),
		TlsMaximumProtocolVersion: tlsProtocol(p.MaxVersion),
		CipherSuites:              p.CipherSuites,
		EcdhCurves:                p.ECDHCurves,
	}
}

// tlsProtocol maps a libs/meshconfig/tlsparams.Versions name (Envoy's enum
// spelling) to Envoy's enum; empty is TLS_AUTO, Envoy's default.
func tlsProtocol(name string) tlsv3.TlsParameters_TlsProtocol {
	return tlsv3.TlsParameters_TlsProtocol(tlsv3.TlsParameters_TlsProtocol_value[name])
}
