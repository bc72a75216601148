package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
	"github.com/openservicemesh/osm/tests/vaultdev"
)

// TestVaultProviderService runs the whole CA with --provider=vault against
// a real Vault dev server: it signs over gRPC, answers Unavailable while
// Vault is paused and recovers without a restart when Vault continues, and
// follows a root rotation done with Vault issuers.
func TestVaultProviderService(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	v := vaultdev.Start(t)
	for _, s := range []struct {
		path string
		body map[string]any
	}{
		{"sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}}},
		{"pki/root/generate/internal", map[string]any{"common_name": "vault root 1", "key_type": "ec", "key_bits": 256, "ttl": "87600h", "issuer_name": "root-1"}},
		{"pki/roles/mesh", map[string]any{"allowed_uri_sans": "spiffe://cluster.local/*", "allowed_domains": "ca.test", "allow_bare_domains": true,
			"require_cn": false, "use_csr_sans": false, "use_csr_common_name": false, "key_type": "ec", "key_bits": 256, "max_ttl": "48h"}},
		{"sys/policies/acl/osm-ca", map[string]any{"policy": `path "pki/sign/mesh" { capabilities = ["update"] }
path "pki/issuers" { capabilities = ["list"] }
path "pki/issuer/*" { capabilities = ["read"] }`}},
	} {
		v.Root(t, http.MethodPost, s.path, s.body)
	}
	tok := v.Root(t, http.MethodPost, "auth/token/create", map[string]any{"policies": []string{"osm-ca"}, "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)

	nats, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()
	const dev = "dev-token-do-not-log"
	svc := runService(t, nats.URL(), map[string]string{"OSM_VAULT_TOKEN": tok, "OSM_DEV_BOOTSTRAP_TOKEN": dev},
		"--provider", "vault", "--vault-addr", v.URL(), "--vault-role", "mesh", "--vault-request-timeout", "700ms", "--vault-retry-budget", "2s",
		"--bundle-refresh", "200ms", "--log-format", "text")
	paused := false
	defer func() {
		if paused {
			_ = v.Resume()
		}
		if err := svc.stop(); err != nil {
			t.Errorf("service stopped with %v", err)
		}
		if l := svc.logs.String(); strings.Contains(l, tok) || strings.Contains(l, dev) {
			t.Errorf("logs leak a token:\n%s", l)
		}
	}()

	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var bundle *meshv1.TrustBundle
	apptest.Eventually(t, "the vault bundle in KV", 30*time.Second, func() (err error) { bundle, _, err = kvBundle(ctx, conn); return err })
	apptest.Eventually(t, "readiness", 30*time.Second, svc.ready)

	edge, csr := svc.devEdge(ctx, t, bundle, dev)
	req := &cav1.SignRequest{Csr: csr, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
	sign := func(ctx context.Context) (*x509.Certificate, error) {
		resp, err := edge.Sign(ctx, req)
		if err != nil {
			return nil, err
		}
		return pki.ParseCertificatePEM(resp.CertificateChainPem)
	}
	oldLeaf, err := sign(ctx)
	if err != nil {
		t.Fatalf("sign through vault: %v", err)
	}
	if err := verifyLeaf(bundle, oldLeaf); err != nil {
		t.Fatal(err)
	}

	// Vault stops answering: the CA says so, and stays up.
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	paused = true
	_, err = sign(ctx)
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "vault") || server.ReasonFromStatus(err) != pki.ReasonUnavailable {
		t.Fatalf("sign while vault is paused: %v, want Unavailable naming vault", err)
	}
	t.Logf("while vault is paused: %v", err)
	apptest.Eventually(t, "not ready while vault is gone", 30*time.Second, func() error {
		if svc.ready() == nil {
			return errors.New("still ready")
		}
		return nil
	})
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	apptest.Eventually(t, "signing after vault returned", 30*time.Second, func() error { _, err := sign(ctx); return err })
	apptest.Eventually(t, "ready again", 30*time.Second, svc.ready)

	// Rotation with Vault issuers, picked up by the bundle refresh.
	v.Root(t, http.MethodPost, "pki/root/generate/internal", map[string]any{"common_name": "vault root 2", "key_type": "ec", "key_bits": 256, "ttl": "87600h", "issuer_name": "root-2"})
	apptest.Eventually(t, "both roots in KV", 30*time.Second, func() error {
		b, _, err := kvBundle(ctx, conn)
		if err == nil && len(b.Roots) != 2 {
			err = errors.New("one root")
		}
		bundle = b
		return err
	})
	v.Root(t, http.MethodPost, "pki/config/issuers", map[string]any{"default": "root-2"})
	var newLeaf *x509.Certificate
	apptest.Eventually(t, "leaves from the new root", 30*time.Second, func() error {
		b, _, err := kvBundle(ctx, conn)
		if err != nil {
			return err
		}
		if newLeaf, err = sign(ctx); err != nil {
			return err
		}
		if string(oldLeaf.RawIssuer) == string(newLeaf.RawIssuer) {
			return errors.New("still issuing from the old root")
		}
		bundle = b
		return nil
	})
	if err := verifyLeaf(bundle, oldLeaf); err != nil {
		t.Errorf("old leaf during the overlap: %v", err)
	}
	if err := verifyLeaf(bundle, newLeaf); err != nil {
		t.Errorf("new leaf: %v", err)
	}
	if _, err := v.Do(ctx, http.MethodDelete, "pki/issuer/root-1", vaultdev.RootToken, nil); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the old root removed from KV", 30*time.Second, func() error {
		b, _, err := kvBundle(ctx, conn)
		if err == nil && (len(b.Roots) != 1 || !b.Roots[0].Signing) {
			err = errors.New("old root still there")
		}
		bundle = b
		return err
	})
	if err := verifyLeaf(bundle, newLeaf); err != nil {
		t.Errorf("new leaf after step 3: %v", err)
	}
}

// TestVaultLoginRefusedSaysWhyAndStopsCleanly: while Vault refuses the
// login, /readyz names the vault check and the flags that decide the login
// (not only "the gRPC listener is not serving yet"), the token is in no log,
// and a stop during the login retries is a clean stop, not a failure.
func TestVaultLoginRefusedSaysWhyAndStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	v := vaultdev.Start(t)
	nats, err := bustest.Start(bustest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()
	const bogus = "hvs.not-a-token-do-not-log"
	svc := runService(t, nats.URL(), map[string]string{"OSM_VAULT_TOKEN": bogus},
		"--provider", "vault", "--vault-addr", v.URL(), "--vault-role", "mesh", "--vault-request-timeout", "700ms", "--vault-retry-budget", "1s")
	apptest.Eventually(t, "readyz naming the refused login", 30*time.Second, func() error {
		body, _ := svc.admin(ctx, "/readyz")
		if !strings.Contains(body, "vault") || !strings.Contains(body, "refused") || !strings.Contains(body, "--vault-token") {
			return fmt.Errorf("readyz: %q", body)
		}
		return nil
	})
	if err := svc.ready(); err == nil {
		t.Fatal("ready although Vault refused the login")
	}
	if err := svc.stop(); err != nil {
		t.Errorf("a stop during the login retries returned %v, want a clean stop", err)
	}
	if l := svc.logs.String(); strings.Contains(l, bogus) {
		t.Errorf("logs leak the token:\n%s", l)
	} else if !strings.Contains(l, "--vault-token") {
		t.Errorf("the logged login failure does not name --vault-token:\n%s", l)
	}
}
