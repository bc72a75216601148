// Command pack packs the Helm chart deploy/charts/osm into the osm CLI's
// embedded archive (internal/chart/osm.tgz), or with -check fails when that
// archive differs from the chart: make osm-chart and make osm-chart-check.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/openservicemesh/osm/cli/osm/internal/chart"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("pack", flag.ContinueOnError)
	src := fs.String("src", "", "the chart directory (deploy/charts/osm)")
	out := fs.String("o", "", "the archive to write, or with -check to compare")
	check := fs.Bool("check", false, "fail when -o differs from -src instead of writing it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *src == "" || *out == "" {
		return fmt.Errorf("-src and -o are required")
	}
	if *check {
		packed, err := os.ReadFile(*out)
		if err != nil {
			return fmt.Errorf("-o: %w", err)
		}
		diff, err := chart.Diff(*src, packed)
		if err != nil {
			return err
		}
		if len(diff) > 0 {
			return fmt.Errorf("%s is stale against %s (run make osm-chart):\n  %s", *out, *src, strings.Join(diff, "\n  "))
		}
		return nil
	}
	var b bytes.Buffer
	if err := chart.Pack(*src, &b); err != nil {
		return err
	}
	return os.WriteFile(*out, b.Bytes(), 0o644)
}
