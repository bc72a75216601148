package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/caclient"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// TestSignGrantsTheAskedLifetime: the test CA has --default-ttl 24h and
// --max-ttl 48h. A Sign request gets the lifetime it asks for within the
// maximum, the default when it asks none, and over the maximum either a
// refusal (ttl_too_long) or, with clamp_ttl, the maximum and a log line
// naming the asked and granted lifetimes. The leaf's validity is the
// granted lifetime plus the CA's one-minute backdate.
func TestSignGrantsTheAskedLifetime(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	edge := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	id := "spiffe://cluster.local/ns/a/sa/b"
	ttl := func(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
	cases := []struct {
		name    string
		ttl     *durationpb.Duration
		clamp   bool
		granted time.Duration // 0: refused
		logged  bool
	}{
		{"unset: the default", nil, false, 24 * time.Hour, false},
		{"unset with clamp: the default", nil, true, 24 * time.Hour, false},
		{"2h", ttl(2 * time.Hour), false, 2 * time.Hour, false},
		{"2h with clamp", ttl(2 * time.Hour), true, 2 * time.Hour, false},
		{"the maximum", ttl(48 * time.Hour), false, 48 * time.Hour, false},
		{"over the maximum", ttl(72 * time.Hour), false, 0, false},
		{"over the maximum with clamp", ttl(72 * time.Hour), true, 48 * time.Hour, true},
		{"zero with clamp is still refused", ttl(0), true, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(ca.logs.String())
			resp, err := edge.Sign(t.Context(), &cav1.SignRequest{Csr: csrtest.PEM(t, csrtest.Key(t), nil), Identity: id, Ttl: c.ttl, ClampTtl: c.clamp,
				Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE})
			if c.granted == 0 {
				if err == nil {
					t.Fatalf("granted until %s, want a refusal", resp.GetNotAfter().AsTime())
				}
				if r := ReasonFromStatus(err); r != pki.ReasonTTLTooLong && r != pki.ReasonInvalidTTL {
					t.Fatalf("refused with %v (reason %q), want a ttl reason", status.Convert(err).Message(), r)
				}
				// The clients (libs/caclient, the edge's sds) read this
				// refusal to ask again without a ttl.
				if tooLong := ReasonFromStatus(err) == pki.ReasonTTLTooLong; caclient.TTLTooLong(err) != tooLong {
					t.Fatalf("caclient.TTLTooLong(%v) = %v, want %v", err, !tooLong, tooLong)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := parseLeaf(t, resp.GetCertificateChainPem())
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != c.granted+time.Minute {
				t.Errorf("validity %s, want %s (granted) + 1m (backdate)", got, c.granted)
			}
			if !resp.GetNotAfter().AsTime().Equal(leaf.NotAfter) {
				t.Errorf("not_after %s, leaf's %s", resp.GetNotAfter().AsTime(), leaf.NotAfter)
			}
			logs := ca.logs.String()[before:]
			clamped := strings.Contains(logs, "sign ttl clamped")
			if clamped != c.logged {
				t.Fatalf("clamp logged: %v, want %v; logs:\n%s", clamped, c.logged, logs)
			}
			if c.logged && (!strings.Contains(logs, "asked_ttl=72h0m0s") || !strings.Contains(logs, "granted_ttl=48h0m0s") || !strings.Contains(logs, "--max-ttl")) {
				t.Errorf("the clamp's log line lacks the asked and granted lifetimes or the reason:\n%s", logs)
			}
		})
	}
}
