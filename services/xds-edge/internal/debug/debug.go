// Package debug is the xds-edge's debug API (libs/edgedebug has its wire
// form): per connected proxy, its node id, identity, the generation it
// ACKed and its lag, its last NACK, the resources the edge serves it and
// the certificates in them. It is served over HTTPS with mutual TLS on a
// listener of its own and answers only the operator's control-plane
// certificate: the edge has no Kubernetes access to check anything else.
// Per recent generation (GET /v1/generations), it reports when the
// compiler and the edge committed it and when each affected proxy ACKed
// or NACKed it, for osm convergence; GET /v1/observed gives an observed
// object's latest entry in KV mesh-observed (its revision, when it was
// stored and when the smi-watcher received the event), which osm
// convergence OBJECT matches against the generations.
// It never shows a private key: a config dump's secrets keep their
// certificates and lose their keys.
package debug

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// The resource types the edge serves and the extensions the
	// policy-compiler puts in them, registered for protojson: a type
	// missing here fails a config dump with its name.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/openservicemesh/osm/libs/edgedebug"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// Source is what the API reads: the edge's xDS server.
type Source interface {
	Proxies() []xds.ProxyState
	Served(nodeID string, typeURLs []string) (xds.ProxyState, []xds.ServedResource, bool)
	Applied() pool.Gen
	Generations() []xds.GenerationSummary
	Convergence(g pool.Gen) (xds.GenerationConvergence, bool)
}

var _ Source = (*xds.Server)(nil)

// Options configure the handler.
type Options struct {
	Source Source
	// EdgeID is the edge's pod name, reported with every proxy.
	EdgeID string
	// TrustDomain is the domain of the operator identity accepted.
	TrustDomain string
	// Log receives refusals (the caller's identity, never a key).
	Log *logrus.Entry
	// Observed reads KV mesh-observed for GET edgedebug.PathObserved;
	// nil answers it 501.
	Observed ObservedReader
}

// Handler serves the API. It must be served over TLS that verified the
// client's certificate (tls.RequireAndVerifyClientCert against the mesh's
// roots); it checks that the certificate is the operator's.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+edgedebug.PathProxies, o.list)
	mux.HandleFunc("GET "+edgedebug.PathProxies+"/{node}/config", o.config)
	mux.HandleFunc("GET "+edgedebug.PathProxies+"/{node}/certs", o.certs)
	mux.HandleFunc("GET "+edgedebug.PathEdge, o.edge)
	mux.HandleFunc("GET "+edgedebug.PathGenerations, o.generations)
	mux.HandleFunc("GET "+edgedebug.PathGenerations+"/{number}", o.generation)
	mux.HandleFunc("GET "+edgedebug.PathObserved, o.observed)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Authorize(r.TLS, o.TrustDomain); err != nil {
			o.Log.WithFields(logrus.Fields{"path": r.URL.Path, "remote_addr": r.RemoteAddr}).WithError(err).Warn("debug api call refused")
			writeError(w, http.StatusForbidden, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Authorize accepts a verified client certificate whose only URI SAN is the
// operator's control-plane identity in trustDomain.
func Authorize(cs *tls.ConnectionState, trustDomain string) error {
	want := identity.ControlPlaneURI(trustDomain, identity.RoleOperator).String()
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("the debug API needs a verified client certificate of %s (osm gets one from the cert-authority)", want)
	}
	leaf := cs.PeerCertificates[0]
	var got []string
	for _, u := range leaf.URIs {
		got = append(got, u.String())
	}
	if len(got) != 1 || got[0] != want {
		return fmt.Errorf("client certificate %v is not the operator's %s: only the operator role may use the debug API", got, want)
	}
	return nil
}

func (o Options) list(w http.ResponseWriter, _ *http.Request) {
	states := o.Source.Proxies()
	out := edgedebug.ProxyList{Edge: o.EdgeID, Proxies: make([]edgedebug.Proxy, 0, len(states))}
	for _, s := range states {
		out.Generation = s.Applied.String()
		out.Proxies = append(out.Proxies, o.proxy(s))
	}
	writeJSON(w, out)
}

func (o Options) config(w http.ResponseWriter, r *http.Request) {
	types, err := edgedebug.ParseTypes(r.URL.Query().Get(edgedebug.QueryType))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	node := r.PathValue("node")
	st, served, ok := o.Source.Served(node, types)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no proxy with node id %q is connected to edge %s", node, o.EdgeID))
		return
	}
	out := edgedebug.Config{Proxy: o.proxy(st), Resources: make([]edgedebug.Resource, 0, len(served))}
	for _, s := range served {
		js, err := resourceJSON(s.Resource)
		if err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Errorf("%s %s: %w", edgedebug.ShortType(s.TypeURL), s.Name, err))
			return
		}
		out.Resources = append(out.Resources, edgedebug.Resource{Type: edgedebug.ShortType(s.TypeURL), Name: s.Name, Version: s.Version, Resource: js})
	}
	writeJSON(w, out)
}

func (o Options) certs(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	st, served, ok := o.Source.Served(node, []string{resourcev3.SecretType})
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no proxy with node id %q is connected to edge %s", node, o.EdgeID))
		return
	}
	out := edgedebug.Certs{Proxy: o.proxy(st), Secrets: []edgedebug.Secret{}}
	for _, s := range served {
		sec, err := secretCerts(s)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		out.Secrets = append(out.Secrets, sec)
	}
	writeJSON(w, out)
}

// proxy is the wire form of a stream's state.
func (o Options) proxy(s xds.ProxyState) edgedebug.Proxy {
	p := edgedebug.Proxy{
		NodeID: s.NodeID, Identity: s.Identity, Edge: o.EdgeID, StreamID: s.StreamID, Protocol: "sotw",
		ConnectedAt: s.Since.UTC(), EdgeGeneration: s.Applied.String(), AckedGeneration: s.Acked.String(),
		Lag: lag(s.Applied, s.Acked), Synced: s.Synced, Types: make([]edgedebug.TypeStatus, 0, len(s.Types)),
	}
	if s.Delta {
		p.Protocol = "delta"
	}
	for _, t := range s.Types {
		p.Types = append(p.Types, edgedebug.TypeStatus{Type: edgedebug.ShortType(t.TypeURL), Acked: t.Acked, Sent: t.Sent, Synced: t.Synced})
	}
	if n := s.LastNack; n != nil {
		p.LastNack = &edgedebug.Nack{Type: edgedebug.ShortType(n.GetTypeUrl()), Version: n.GetVersion(), Message: n.GetErrorMessage(), Time: n.GetTime().AsTime().UTC()}
	}
	return p
}

// lag is how many generations acked is behind applied: the difference of
// their numbers in one epoch, the whole of applied's number across epochs
// (mesh-compiled was rewritten since).
func lag(applied, acked pool.Gen) uint64 {
	switch {
	case !acked.Less(applied):
		return 0
	case acked.Epoch == applied.Epoch:
		return applied.Number - acked.Number
	}
	return applied.Number
}

// resourceJSON renders a resource as protobuf JSON; a secret first loses
// its private key (see redact).
func resourceJSON(a *anypb.Any) (json.RawMessage, error) {
	if a.GetTypeUrl() == resourcev3.SecretType {
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			return nil, err
		}
		var err error
		if a, err = anypb.New(redact(sec)); err != nil {
			return nil, err
		}
	}
	b, err := protojson.MarshalOptions{Indent: ""}.Marshal(a)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// redact returns a copy of s holding only what may be shown: its name, a
// certificate's chain (its private key replaced by edgedebug.Redacted)
// and a validation context. Any other kind of secret shows its name only.
func redact(s *tlsv3.Secret) *tlsv3.Secret {
	out := &tlsv3.Secret{Name: s.GetName()}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		out.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: proto.CloneOf(t.TlsCertificate.GetCertificateChain()),
			PrivateKey:       inlineString(edgedebug.Redacted),
		}}
	case *tlsv3.Secret_ValidationContext:
		out.Type = &tlsv3.Secret_ValidationContext{ValidationContext: proto.CloneOf(t.ValidationContext)}
	}
	return out
}

// secretCerts describes the certificates of an SDS secret.
func secretCerts(s xds.ServedResource) (edgedebug.Secret, error) {
	sec := &tlsv3.Secret{}
	if err := s.Resource.UnmarshalTo(sec); err != nil {
		return edgedebug.Secret{}, fmt.Errorf("secret %s: %w", s.Name, err)
	}
	out := edgedebug.Secret{Name: s.Name, Version: s.Version}
	var pemBytes []byte
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		out.Kind, pemBytes = "certificate", t.TlsCertificate.GetCertificateChain().GetInlineBytes()
	case *tlsv3.Secret_ValidationContext:
		out.Kind, pemBytes = "trusted-ca", t.ValidationContext.GetTrustedCa().GetInlineBytes()
	default:
		return out, nil
	}
	certs, err := edgedebug.CertificatesFromPEM(pemBytes)
	if err != nil {
		return edgedebug.Secret{}, fmt.Errorf("secret %s: %w", s.Name, err)
	}
	out.Certificates = certs
	return out, nil
}

func inlineString(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// An encoding error leaves a truncated body, which the client refuses.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(edgedebug.Error{Error: err.Error()})
}
