package pki

import (
	"errors"
	"fmt"
)

// Reason names why a request was refused. It is the label of the failure
// metric and appears in the gRPC status message.
type Reason string

// Refusal reasons.
const (
	// ReasonMalformedCSR: the CSR is not a parseable PKCS#10 request.
	ReasonMalformedCSR Reason = "malformed_csr"
	// ReasonBadSignature: the CSR is not signed by its own key.
	ReasonBadSignature Reason = "csr_signature_invalid"
	// ReasonUnsupportedKey: the CSR's key is not ECDSA P-256.
	ReasonUnsupportedKey Reason = "unsupported_key"
	// ReasonSANMismatch: the CSR names an identity other than the one
	// requested, or a SAN of another kind.
	ReasonSANMismatch Reason = "san_mismatch"
	// ReasonInvalidIdentity: the identity is not a workload SPIFFE ID.
	ReasonInvalidIdentity Reason = "invalid_identity"
	// ReasonForeignTrustDomain: the identity is outside the mesh's trust
	// domain.
	ReasonForeignTrustDomain Reason = "foreign_trust_domain"
	// ReasonInvalidUsage: the request names no certificate usage, or an
	// unknown one.
	ReasonInvalidUsage Reason = "invalid_usage"
	// ReasonUsageNotAllowed: the caller's role may not obtain a
	// certificate of that usage.
	ReasonUsageNotAllowed Reason = "usage_not_allowed"
	// ReasonTTLTooLong: the requested lifetime exceeds the maximum.
	ReasonTTLTooLong Reason = "ttl_too_long"
	// ReasonInvalidTTL: the requested lifetime is not positive.
	ReasonInvalidTTL Reason = "invalid_ttl"
	// ReasonIssuerExpired: the signing root has expired or is about to.
	ReasonIssuerExpired Reason = "issuer_expired"
	// ReasonUnavailable: the backing provider (Vault) cannot be reached.
	ReasonUnavailable Reason = "provider_unavailable"
	// ReasonProvider: the backing provider refused or failed the request.
	ReasonProvider Reason = "provider_error"
)

// Error is a refusal with a reason.
type Error struct {
	// Reason classifies the refusal.
	Reason Reason
	// Msg explains it to the caller.
	Msg string
	// Err is the underlying error, if any.
	Err error
}

// Error formats the reason, message and cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Reason, e.Msg, e.Err)
	}
	return string(e.Reason) + ": " + e.Msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with reason r.
func Errorf(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with reason r wrapping err.
func Wrap(r Reason, err error, format string, args ...any) error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...), Err: err}
}

// ReasonOf is the reason of err, or "" when err carries none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
