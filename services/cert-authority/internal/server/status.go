package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// ErrorDomain is the ErrorInfo domain of the CA's refusals.
const ErrorDomain = "ca.openservicemesh.io"

// codeOf maps a refusal reason to its gRPC code.
func codeOf(r pki.Reason) codes.Code {
	switch r {
	case pki.ReasonForeignTrustDomain, pki.ReasonUsageNotAllowed:
		return codes.PermissionDenied
	case pki.ReasonIssuerExpired:
		return codes.FailedPrecondition
	case pki.ReasonUnavailable:
		return codes.Unavailable
	case pki.ReasonProvider:
		return codes.Internal
	default:
		return codes.InvalidArgument
	}
}

// toStatus translates an error into a gRPC status whose message starts with
// the reason and which carries an ErrorInfo with the reason in upper case
// (for example TTL_TOO_LONG). Errors without a reason become Internal, and
// context errors keep their meaning.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	r := pki.ReasonOf(err)
	if r == "" {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return status.FromContextError(err).Err()
		}
		return status.Error(codes.Internal, err.Error())
	}
	return statusWithReason(codeOf(r), r, err.Error())
}

func statusWithReason(c codes.Code, r pki.Reason, msg string) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: strings.ToUpper(string(r)), Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// ReasonFromStatus extracts the refusal reason from a gRPC error returned by
// the CA, or "" if it carries none.
func ReasonFromStatus(err error) pki.Reason {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == ErrorDomain {
			return pki.Reason(strings.ToLower(ei.Reason))
		}
	}
	return ""
}

// reasonLabel is the metric label of an outcome.
func reasonLabel(err error) string {
	if err == nil {
		return "ok"
	}
	if r := pki.ReasonOf(err); r != "" {
		return string(r)
	}
	if r := ReasonFromStatus(err); r != "" {
		return string(r)
	}
	if st, ok := status.FromError(err); ok {
		return strings.ToLower(st.Code().String())
	}
	return "internal"
}
