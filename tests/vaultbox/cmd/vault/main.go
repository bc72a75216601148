// Command vault is the HashiCorp Vault CLI and server, built from the Go
// module for OSM's integration tests. Run it with GODEBUG=x509negativeserial=1:
// a bundled dependency's CA certificates otherwise make Go >= 1.23 panic at
// start.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
