package caclient

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// FieldServiceCertValidity is the MeshConfig field that sets the lifetime
// of service certificates.
const FieldServiceCertValidity = "spec.certificate.serviceCertValidityDuration"

// MinServiceLifetime is the shortest service certificate lifetime a
// MeshConfig gets: a shorter one is raised to it, so that a typo ("10s")
// cannot make every identity's certificate renew every few seconds.
const MinServiceLifetime = time.Minute

// ServiceLifetime is the lifetime of service certificates the MeshConfig mc
// names (FieldServiceCertValidity): 0 when it names none or mc is nil,
// otherwise at least MinServiceLifetime (raised says it was raised). An
// error, naming the field, when the value did not parse (the smi-watcher
// recorded it in invalid_fields) or is not positive: callers keep the last
// good lifetime.
func ServiceLifetime(mc *meshv1.MeshConfig) (d time.Duration, raised bool, err error) {
	for _, f := range mc.GetInvalidFields() {
		if f.GetFieldPath() == FieldServiceCertValidity {
			return 0, false, fmt.Errorf("%s: %s (got %q)", FieldServiceCertValidity, f.GetMessage(), f.GetValue())
		}
	}
	v := mc.GetCertificate().GetServiceCertValidityDuration()
	switch {
	case v == nil:
		return 0, false, nil
	case v.AsDuration() <= 0:
		return 0, false, fmt.Errorf("%s: %s is not a positive duration", FieldServiceCertValidity, v.AsDuration())
	case v.AsDuration() < MinServiceLifetime:
		return MinServiceLifetime, true, nil
	}
	return v.AsDuration(), false, nil
}

// SignOptions are a Sign request's lifetime fields.
type SignOptions struct {
	// TTL is the lifetime asked; 0 asks none (the CA's --default-ttl).
	TTL time.Duration
	// ClampTTL asks the CA to sign a TTL over its --max-ttl for --max-ttl
	// (logged there) rather than refuse it. A CA older than that refuses
	// with ttl_too_long; SignWith then asks again without a TTL.
	ClampTTL bool
}

// SignWith is Sign with the lifetime fields of o.
func SignWith(ctx context.Context, c cav1.CertificateAuthorityServiceClient, id identity.ID, u identity.Usage, o SignOptions) (*Issued, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := key.CSRFor(id, u)
	if err != nil {
		return nil, err
	}
	req := &cav1.SignRequest{Csr: csr, Identity: id.String(), Usage: Usages[u]}
	if o.TTL > 0 {
		req.Ttl, req.ClampTtl = durationpb.New(o.TTL), o.ClampTTL
	}
	resp, err := c.Sign(ctx, req)
	if err != nil && req.GetClampTtl() && TTLTooLong(err) {
		req.Ttl, req.ClampTtl = nil, false
		if resp, err = c.Sign(ctx, req); err != nil {
			err = fmt.Errorf("the CA refused the lifetime %s (it does not clamp) and then its default: %w", o.TTL, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sign %s certificate for %s: %w", u, id, err)
	}
	return issued(resp.GetCertificateChainPem(), key)
}

// CA refusals' ErrorInfo: the domain, and the reason of a lifetime over
// the CA's maximum.
const (
	ErrorDomain      = "ca.openservicemesh.io"
	ReasonTTLTooLong = "TTL_TOO_LONG"
)

// TTLTooLong reports whether err is the CA's refusal of a lifetime over
// its maximum.
func TTLTooLong(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	for _, d := range se.GRPCStatus().Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain && strings.EqualFold(ei.GetReason(), ReasonTTLTooLong) {
			return true
		}
	}
	return false
}
