package sds

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// The lifetime a service certificate is asked for, in order:
//
//  1. the MeshConfig's spec.certificate.serviceCertValidityDuration, set
//     with SetLifetime, with clamp_ttl: the CA grants at most its
//     --max-ttl, and logs when it shortens the lifetime;
//  2. Options.TTL (the edge's --cert-ttl), when not zero;
//  3. none: the CA's --default-ttl.
//
// A change applies at each certificate's next issue or renewal; none is
// re-signed for it. Renewal is at half of the lifetime the CA granted, so
// it follows the new lifetime from the first certificate issued with it.

// SetLifetime sets the lifetime the MeshConfig names; 0 means it names
// none. The first call also releases the signatures held back by
// Options.AwaitLifetime.
func (i *Issuer) SetLifetime(d time.Duration) {
	if old := time.Duration(i.meshTTL.Swap(int64(max(d, 0)))); old != d || !i.lifetimeSet() {
		i.opts.Log.WithField("lifetime", d.String()).Info("service certificate lifetime set; it applies at each certificate's next issue or renewal")
	}
	i.knownOnce.Do(func() { close(i.known) })
}

// Lifetime is the lifetime set with SetLifetime (0: none).
func (i *Issuer) Lifetime() time.Duration { return time.Duration(i.meshTTL.Load()) }

func (i *Issuer) lifetimeSet() bool {
	select {
	case <-i.known:
		return true
	default:
		return false
	}
}

// awaitLifetime holds a first signature back until SetLifetime was called
// or Options.AwaitLifetime has passed since New; false when ctx ended.
func (i *Issuer) awaitLifetime(ctx context.Context) bool {
	select {
	case <-i.known:
		return true
	case <-ctx.Done():
		return false
	}
}

// signRequest is the Sign request for csr of id with the current lifetime.
func (i *Issuer) signRequest(csr []byte, id identity.ID) *cav1.SignRequest {
	req := &cav1.SignRequest{Csr: csr, Identity: id.String(), Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
	switch d := i.Lifetime(); {
	case d > 0:
		req.Ttl, req.ClampTtl = durationpb.New(d), true
	case i.opts.TTL > 0:
		req.Ttl = durationpb.New(i.opts.TTL)
	}
	return req
}

// sign has req signed. A CA older than clamp_ttl refuses a lifetime over
// its --max-ttl with ttl_too_long; the edge then asks again without one
// and gets the CA's --default-ttl.
func (i *Issuer) sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	resp, err := i.opts.Signer.Sign(ctx, req)
	if err == nil || !req.GetClampTtl() || !caclient.TTLTooLong(err) {
		return resp, err
	}
	i.opts.Log.WithContext(ctx).WithFields(map[string]any{"identity": req.GetIdentity(), "lifetime": req.GetTtl().AsDuration().String()}).WithError(err).
		Warn("the cert-authority refused the MeshConfig's certificate lifetime and does not clamp it: asking for its default")
	return i.opts.Signer.Sign(ctx, &cav1.SignRequest{Csr: req.GetCsr(), Identity: req.GetIdentity(), Usage: req.GetUsage()})
}

// renewAt is when a certificate received at got is renewed: half-way
// from then to its NotAfter, so that renewals follow the lifetime the CA
// granted (its backdated NotBefore does not bring them forward).
func renewAt(c *Certificate, got time.Time) time.Time {
	from := got
	if c.NotBefore.After(from) {
		from = c.NotBefore
	}
	return from.Add(c.NotAfter.Sub(from) / 2)
}
