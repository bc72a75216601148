// Package tlsparams holds the rules of MeshConfig's sidecar TLS
// parameters (spec.sidecar.tlsMinProtocolVersion, tlsMaxProtocolVersion,
// cipherSuites, ecdhCurves): the names Envoy accepts, the rejections the
// validating webhook gives, and the usable parameters the policy-compiler
// compiles into every mTLS context's tls_params. It has no Kubernetes
// dependency, so the compiler can use it.
package tlsparams

import (
	"fmt"
	"slices"
	"strings"

	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Field paths of the sidecar's TLS parameters, which the policy-compiler
// compiles into the tls_params of every Envoy Upstream and Downstream
// TlsContext of the mesh's mTLS.
const (
	FieldMinVersion   = "spec.sidecar.tlsMinProtocolVersion"
	FieldMaxVersion   = "spec.sidecar.tlsMaxProtocolVersion"
	FieldCipherSuites = "spec.sidecar.cipherSuites"
	FieldECDHCurves   = "spec.sidecar.ecdhCurves"
)

// Versions are the protocol version names, in Envoy's
// TlsParameters.TlsProtocol spelling, oldest first; TLS_AUTO (Envoy's own
// default for the side) comes first.
var Versions = []string{"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"}

// CipherSuites are the TLS 1.0-1.2 cipher suite names Envoy's BoringSSL
// accepts (Envoy refuses, NACKs, a whole config naming another). TLS 1.3's
// suites are not configurable.
var CipherSuites = []string{
	"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
	"ECDHE-PSK-CHACHA20-POLY1305",
	"ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-PSK-AES128-CBC-SHA",
	"ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA", "ECDHE-PSK-AES256-CBC-SHA",
	"AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
	"PSK-AES128-CBC-SHA", "PSK-AES256-CBC-SHA", "DES-CBC3-SHA",
}

// ECDHCurves are the curve names Envoy's BoringSSL accepts.
var ECDHCurves = []string{"X25519", "P-256", "P-224", "P-384", "P-521", "X25519MLKEM768"}

// versionRank is the index of v in Versions, or -1.
func versionRank(v string) int { return slices.Index(Versions, v) }

// validCipher accepts a suite name, or an equal-preference group of them
// in BoringSSL's "[A|B]" form.
func validCipher(c string) bool {
	if strings.HasPrefix(c, "[") && strings.HasSuffix(c, "]") && len(c) > 2 {
		for _, part := range strings.Split(c[1:len(c)-1], "|") {
			if !slices.Contains(CipherSuites, part) {
				return false
			}
		}
		return true
	}
	return slices.Contains(CipherSuites, c)
}

// Rejections checks the sidecar's TLS parameters: version names, the
// minimum not above the maximum, and every cipher suite and curve known.
func Rejections(sc *meshv1.SidecarSpec) []*policy.Rejection {
	var out []*policy.Rejection
	versions := strings.Join(Versions, ", ")
	lo, hi := -1, -1
	if v := sc.GetTlsMinProtocolVersion(); v != "" {
		if lo = versionRank(v); lo < 0 {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldMinVersion, "%q is not a TLS version; one of %s", v, versions))
		}
	}
	if v := sc.GetTlsMaxProtocolVersion(); v != "" {
		if hi = versionRank(v); hi < 0 {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldMaxVersion, "%q is not a TLS version; one of %s", v, versions))
		}
	}
	// TLS_AUTO (rank 0) is Envoy's default for the side, not an order.
	if lo > 0 && hi > 0 && lo > hi {
		out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldMinVersion,
			"minimum %s is above the maximum %s (%s)", sc.GetTlsMinProtocolVersion(), sc.GetTlsMaxProtocolVersion(), FieldMaxVersion))
	}
	for i, c := range sc.GetCipherSuites() {
		if !validCipher(c) {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, fmt.Sprintf("%s[%d]", FieldCipherSuites, i),
				"%q is not a cipher suite Envoy knows, such as ECDHE-ECDSA-AES128-GCM-SHA256", c))
		}
	}
	for i, c := range sc.GetEcdhCurves() {
		if !slices.Contains(ECDHCurves, c) {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, fmt.Sprintf("%s[%d]", FieldECDHCurves, i),
				"%q is not an ECDH curve; one of %s", c, strings.Join(ECDHCurves, ", ")))
		}
	}
	return out
}

// Params are the sidecar's TLS parameters of a MeshConfig with the
// values Rejections refuses left out, so that a MeshConfig that got
// past validation (the webhook away) never reaches Envoy as a config it
// would NACK: a bad version is Envoy's default, a bad suite or curve is
// dropped, and a minimum above the maximum drops both.
type Params struct {
	// MinVersion and MaxVersion are names from Versions, or empty.
	MinVersion, MaxVersion string
	// CipherSuites and ECDHCurves are the known names, in their order.
	CipherSuites, ECDHCurves []string
}

// Effective returns the usable TLS parameters of mc.
func Effective(mc *meshv1.MeshConfig) Params {
	sc := mc.GetSidecar()
	var p Params
	lo, hi := versionRank(sc.GetTlsMinProtocolVersion()), versionRank(sc.GetTlsMaxProtocolVersion())
	if !(lo > 0 && hi > 0 && lo > hi) {
		if lo >= 0 {
			p.MinVersion = Versions[lo]
		}
		if hi >= 0 {
			p.MaxVersion = Versions[hi]
		}
	}
	for _, c := range sc.GetCipherSuites() {
		if validCipher(c) {
			p.CipherSuites = append(p.CipherSuites, c)
		}
	}
	for _, c := range sc.GetEcdhCurves() {
		if slices.Contains(ECDHCurves, c) {
			p.ECDHCurves = append(p.ECDHCurves, c)
		}
	}
	return p
}
