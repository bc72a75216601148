// Command images builds the OCI images of the OSM services without Docker,
// with go-containerregistry, and pushes them to a registry.
//
//	images build [flags]   one OCI image layout per service under .bin/images/<service>
//	images push  [flags]   push those layouts to --registry
//
// `make images` and `make push REGISTRY=…` run it. docs/images.md describes
// what an image holds and why the same commit gives the same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

const usage = `images builds the OSM service images without Docker and pushes them.

Usage:
  images build [flags]   build one OCI image layout per service (make images)
  images push  [flags]   push the built layouts to a registry (make push)
  images <command> --help

Each image holds the service's static binary (CGO_ENABLED=0, -trimpath, built
with GOWORK=off from the service's own module), a non-root user (65532:65532,
named osm in /etc/passwd and /etc/group), the CA certificates of the pinned
golang.org/x/crypto/x509roots/fallback module and the OCI labels source,
revision, version, title and created. The same commit (and Go toolchain) gives
the same digests; a tree with uncommitted changes gets a version ending in
-dirty.
`

// run is main without the process: it parses args and runs one command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required: build or push")
	}
	switch args[0] {
	case "build":
		return runBuild(ctx, args[1:], stdout, stderr)
	case "push":
		return runPush(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q: want build or push", args[0])
	}
}

// newFlagSet returns a flag set for one command that prints its usage,
// headed by summary, on --help and returns errors instead of exiting.
func newFlagSet(name, summary string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("images "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\nUsage: images %s [flags]\n\nFlags:\n", summary, name)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs; --help prints to stdout and returns
// flag.ErrHelp, and a bad flag returns an error naming it.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w (see images %s --help)", fs.Name(), err, strings.TrimPrefix(fs.Name(), "images "))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see --help)", fs.Name(), fs.Arg(0))
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
