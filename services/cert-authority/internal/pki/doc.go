// Package pki is the certificate core of the cert-authority: SPIFFE identity
// parsing, CSR validation, leaf issuance from an ECDSA P-256 issuer, root
// generation and the root rotation state (the signing root plus the roots
// kept trusted during an overlap). It does no I/O: providers store and fetch
// roots, the server speaks gRPC.
//
// Identities. A workload identity is
//
//	spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>
//
// A control-plane component's identity encodes its role in a path no
// workload identity can have:
//
//	spiffe://<trust-domain>/osm/<role>
//
// for example spiffe://cluster.local/osm/xds-edge. Sign only ever issues
// workload identities, so a caller of Sign can never obtain a control-plane
// identity; those come from Bootstrap alone.
package pki
