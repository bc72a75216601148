package server

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
)

// IssuerInfo is one root as the debug endpoint lists it.
type IssuerInfo struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	Signing   bool      `json:"signing"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	ExpiresIn string    `json:"expires_in"`
}

// DebugInfo is the body of GET /debug/issuers.
type DebugInfo struct {
	BundleVersion            string       `json:"bundle_version"`
	Issuers                  []IssuerInfo `json:"issuers"`
	ServingCertificateExpiry time.Time    `json:"serving_certificate_not_after"`
}

// DebugHandler serves GET /debug/issuers: the roots of the current bundle
// (which one signs) with their expiry, and the serving certificate's expiry.
// It shows certificates only, never keys.
func DebugHandler(hub *trust.Hub, cert *ServingCert) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/issuers", func(w http.ResponseWriter, _ *http.Request) {
		info := DebugInfo{Issuers: []IssuerInfo{}}
		if cert != nil {
			info.ServingCertificateExpiry = cert.NotAfter().UTC()
		}
		b, _ := hub.Current()
		info.BundleVersion = b.GetVersion()
		for _, r := range b.GetRoots() {
			ii := IssuerInfo{ID: r.Id, Signing: r.Signing, NotBefore: r.NotBefore.AsTime(), NotAfter: r.NotAfter.AsTime(),
				ExpiresIn: time.Until(r.NotAfter.AsTime()).Round(time.Second).String()}
			if c, err := pki.ParseCertificatePEM(r.CertificatePem); err == nil {
				ii.Subject = c.Subject.String()
			}
			info.Issuers = append(info.Issuers, ii)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(info)
	})
	return mux
}
