// Package edgefault holds fault tests of the fault plan (docs/faults.md)
// that are about what proxies get from the xds-edges, run against real
// servers on loopback: the services built from services/<name> and run as
// processes (tests/stack), an embedded NATS server, the Vault dev server
// (tests/vaultdev), and simulated proxies (libs/xdstest) that check every
// response.
//
//   - F4 (failover_test.go): one edge killed with SIGKILL and restarted
//     with no state while the other serves; proxies fail over.
//   - F6 (vault_test.go): Vault unreachable while the edge's service
//     certificates come up for renewal.
//
// The tests run in `make test` at a reduced size; OSM_FAULTS_FULL=1 runs
// them at the fault plan's size (F4: 1,000 proxies; F6: the 45-minute
// variant as well).
package edgefault
