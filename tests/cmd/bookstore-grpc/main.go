// Command bookstore-grpc is the proxyless gRPC example of the bookstore
// demo: a server of the service bookstore.Books (methods Get and Buy) and
// a client that calls it, both with gRPC-Go's xDS support, so that the
// mesh (the xds-edge) gives them their routes, endpoints, mTLS and
// authorization. Neither has an Envoy beside it.
//
// Each reads its xDS bootstrap from the file $GRPC_XDS_BOOTSTRAP (gRPC's
// own variable): the edge as xDS server over mTLS, the node with the
// metadata openservicemesh.io/proxyless=grpc and the certificate provider
// osm-certs with the workload's certificate files. The injector writes it
// for pods annotated openservicemesh.io/proxyless: grpc.
//
//	bookstore-grpc serve --addr 10.244.2.10:14001 --version v1
//	bookstore-grpc call --target xds:///bookstore.bookstore:14001 --rate 10
//
// The messages are google.protobuf.StringValue, so no proto of its own is
// needed: the request is a book's name, the reply "<version> <caller>",
// the server's --version and the SPIFFE id of the caller's certificate.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `Usage: bookstore-grpc serve|call [flags]

The proxyless gRPC bookstore: a server of bookstore.Books (Get, Buy) and a
client of it, configured by the mesh through gRPC's xDS support. Both read
their xDS bootstrap from $GRPC_XDS_BOOTSTRAP.

  serve   serve bookstore.Books on --addr with xDS-managed mTLS and RBAC;
          replies "<version> <caller SPIFFE id>"
  call    call --target at --rate and print calls per backend and result

Run "bookstore-grpc <command> --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bookstore-grpc:", err)
		os.Exit(1)
	}
}

// errHelp is returned after --help printed the usage.
var errHelp = errors.New("help requested")

// run runs the command of args.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required: serve or call")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "call":
		return call(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return errHelp
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q: want serve or call", args[0])
}
