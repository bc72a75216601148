// Package e2e runs the mesh's services as real processes, booted by
// tests/stack against the real test servers (the kubebox control plane, an
// embedded NATS), and checks the flows that cross services.
package e2e
