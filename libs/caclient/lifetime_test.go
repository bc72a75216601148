package caclient

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestServiceLifetime(t *testing.T) {
	validity := func(d time.Duration) *meshv1.MeshConfig {
		return &meshv1.MeshConfig{Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(d)}}
	}
	for _, c := range []struct {
		name   string
		mc     *meshv1.MeshConfig
		want   time.Duration
		raised bool
		err    bool
	}{
		{"no MeshConfig", nil, 0, false, false},
		{"no field", &meshv1.MeshConfig{}, 0, false, false},
		{"2h", validity(2 * time.Hour), 2 * time.Hour, false, false},
		{"the minimum", validity(time.Minute), time.Minute, false, false},
		{"under the minimum", validity(10 * time.Second), time.Minute, true, false},
		{"zero", validity(0), 0, false, true},
		{"negative", validity(-time.Hour), 0, false, true},
		{"did not parse", &meshv1.MeshConfig{InvalidFields: []*meshv1.InvalidField{{FieldPath: FieldServiceCertValidity, Value: "a day"}}}, 0, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, raised, err := ServiceLifetime(c.mc)
			if d != c.want || raised != c.raised || (err != nil) != c.err {
				t.Fatalf("ServiceLifetime = %s, %v, %v; want %s, %v, error %v", d, raised, err, c.want, c.raised, c.err)
			}
		})
	}
}

// oldCA signs for the asked lifetime (24h when none) and, like a
// cert-authority older than clamp_ttl, refuses one over 48h with
// ttl_too_long whatever clamp_ttl says.
type oldCA struct {
	cav1.CertificateAuthorityServiceClient // other methods: not called
	key                                    *identity.Key
	reqs                                   []*cav1.SignRequest
}

func (f *oldCA) Sign(_ context.Context, req *cav1.SignRequest, _ ...grpc.CallOption) (*cav1.SignResponse, error) {
	f.reqs = append(f.reqs, req)
	ttl := 24 * time.Hour
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl > 48*time.Hour {
		st, _ := status.New(codes.InvalidArgument, "ttl_too_long: ttl exceeds the maximum 48h").WithDetails(&errdetails.ErrorInfo{Reason: ReasonTTLTooLong, Domain: ErrorDomain})
		return nil, st.Err()
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: csr.URIs, NotBefore: now, NotAfter: now.Add(ttl)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, f.key.Private())
	if err != nil {
		return nil, err
	}
	return &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// TestSignWithFallsBackOnAnOldCA: asked with ClampTTL, a lifetime an
// older CA refuses (ttl_too_long) is asked again without one, and the
// CA's default comes back; without ClampTTL the refusal is the answer.
func TestSignWithFallsBackOnAnOldCA(t *testing.T) {
	key, _ := identity.NewKey()
	id := identity.New("cluster.local", "ns", "sa")
	ca := &oldCA{key: key}
	got, err := SignWith(t.Context(), ca, id, identity.UsageService, SignOptions{TTL: 72 * time.Hour, ClampTTL: true})
	if err != nil {
		t.Fatal(err)
	}
	if life := got.Pair.Leaf.NotAfter.Sub(got.Pair.Leaf.NotBefore); life != 24*time.Hour || len(ca.reqs) != 2 || ca.reqs[1].GetTtl() != nil {
		t.Fatalf("lifetime %s after %d requests, want the default 24h after asking again without a ttl", life, len(ca.reqs))
	}
	ca.reqs = nil
	if _, err := SignWith(t.Context(), ca, id, identity.UsageService, SignOptions{TTL: 72 * time.Hour}); !TTLTooLong(err) || len(ca.reqs) != 1 {
		t.Fatalf("without ClampTTL: %v after %d requests, want the ttl_too_long refusal", err, len(ca.reqs))
	}
	got, err = SignWith(t.Context(), ca, id, identity.UsageService, SignOptions{TTL: 2 * time.Hour, ClampTTL: true})
	if err != nil {
		t.Fatal(err)
	}
	if life := got.Pair.Leaf.NotAfter.Sub(got.Pair.Leaf.NotBefore); life != 2*time.Hour || !ca.reqs[len(ca.reqs)-1].GetClampTtl() {
		t.Fatalf("within the maximum: %s, want 2h asked with clamp_ttl", life)
	}
}
